"""A rich progress bar over training epochs and batches (or nothing, when turned off)."""

from __future__ import annotations

from typing import Any


class EpochProgress:
    """A rich progress bar over epochs and batches, or nothing."""

    def __init__(self, enabled: bool, epochs: int, batches: int, metric: str) -> None:
        self.enabled, self.epochs, self.batches = enabled, epochs, max(batches, 1)
        self.metric = metric
        self._p: Any = None

    def __enter__(self) -> EpochProgress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._p = Progress(TextColumn("[bold]train[/] {task.description}"), BarColumn(),
                               MofNCompleteColumn(), TimeElapsedColumn(), transient=False)
            self._p.start()
            self._task = self._p.add_task("epoch 1", total=self.epochs * self.batches)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._p is not None:
            self._p.stop()

    def advance_to(self, epochs_done: int) -> None:
        if self._p is not None:
            self._p.update(self._task, completed=epochs_done * self.batches)

    def batch(self, loss: float) -> None:
        if self._p is not None:
            self._p.advance(self._task)

    def epoch_done(self, epoch: int, row: dict[str, Any]) -> None:
        if self._p is not None:
            score = f" {self.metric} {row[self.metric]:.4f}" if self.metric in row else ""
            self._p.update(self._task, completed=epoch * self.batches,
                           description=f"epoch {epoch} loss {row['loss']:.3f}{score}")
