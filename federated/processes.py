"""The Flower processes of one run (SuperLink, SuperNodes, `flwr run`) as supervised children.

Each is a :class:`recops.core.supervisor.Child` whose failures raise TrainingError; its PID goes
to ``<name>.pid`` beside its log, and the run's processes are stopped newest first.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from recops.core.supervisor import Child, start
from recops.errors import TrainingError

BIN = Path(sys.executable).parent  # flwr's console scripts sit next to this interpreter


class FlowerProcesses:
    """The processes of one run, each in its own session; stopped (group and all) newest first."""

    def __init__(self, env: Mapping[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.children: list[Child] = []

    def start(self, name: str, argv: Sequence[str], what: str | None = None) -> Child:
        """Start ``argv`` (a console script of this venv by preference) logging to ``name``.log."""
        script = BIN / argv[0]
        cmd = [str(script) if script.exists() else argv[0], *argv[1:]]
        child = start(what or argv[0], cmd, self.env, self.log_dir / f"{name}.log",
                      error=TrainingError, grace=15.0)
        self.children.append(child)
        (self.log_dir / f"{name}.pid").write_text(str(child.pid))
        return child

    def stop(self) -> None:
        """SIGTERM each group (a SuperLink stops its own children), SIGKILL what outlives it."""
        while self.children:
            self.children.pop().stop()

    def __enter__(self) -> FlowerProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
