"""Training's budget and learning-rate schedule: epochs, and optionally minutes of wall time.

The budget is spent by whichever runs out first: ``fraction()`` is the larger of the steps taken
over all the epochs' steps and the seconds trained over ``max_minutes``. A cosine schedule
follows that fraction, so a run cut short by its time budget still ends at a low rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Literal


class TrainingBudget:
    """Steps and seconds spent against ``epochs`` x ``steps_per_epoch`` and ``max_minutes``.

    ``elapsed`` and ``steps`` restore a resumed run's spend; ``clock`` is injectable for tests.
    """

    def __init__(self, epochs: int, steps_per_epoch: int, max_minutes: float | None = None, *,
                 lr: float = 1e-3, schedule: Literal["constant", "cosine"] = "constant",
                 elapsed: float = 0.0, steps: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if epochs < 1 or steps_per_epoch < 1:
            raise ValueError("a training budget needs at least one epoch of one step")
        self.total_steps = epochs * steps_per_epoch
        self.max_seconds = None if max_minutes is None else max_minutes * 60.0
        self.lr, self.schedule = lr, schedule
        self.steps, self._clock = steps, clock
        self._base = elapsed
        self._since = clock()

    @property
    def elapsed(self) -> float:
        """Seconds trained, a resumed run's earlier seconds included."""
        return self._base + self._clock() - self._since

    def fraction(self) -> float:
        """How much of the budget is spent, in [0, 1]."""
        f = self.steps / self.total_steps
        if self.max_seconds is not None:
            f = max(f, self.elapsed / self.max_seconds)
        return min(f, 1.0)

    def out_of_time(self) -> bool:
        return self.max_seconds is not None and self.elapsed >= self.max_seconds

    def next_lr(self) -> float:
        """The learning rate for the next step (and counts that step)."""
        f = self.fraction()
        self.steps += 1
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * f))
        return self.lr
