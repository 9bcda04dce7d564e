"""Start, watch and stop the Flower processes (SuperLink, SuperNodes, `flwr run`) of one run."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

from recops.errors import TrainingError

BIN = Path(sys.executable).parent  # flwr's console scripts sit next to this interpreter


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path,
                  timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TrainingError(f"{what} exited with code {proc.returncode} before it was ready; "
                                f"see {log}:\n{tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.3)
    raise TrainingError(f"{what} did not open 127.0.0.1:{port} within {timeout:.0f} s; see {log}")


def tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


class ProcessGroup:
    """Processes of one run, each in its own session; stopped by PID (group), newest first."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._stack = ExitStack()

    def start(self, name: str, argv: Sequence[str]) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.log_dir / f"{name}.log"
        fh = self._stack.enter_context(open(log, "ab"))  # noqa: SIM115 - closed by the stack
        cmd = [str(BIN / argv[0]) if (BIN / argv[0]).exists() else argv[0], *argv[1:]]
        proc = subprocess.Popen(cmd, env=self.env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append((name, proc))
        (self.log_dir / f"{name}.pid").write_text(str(proc.pid))
        return proc, log

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM each process group we started (SuperLink stops its children), then SIGKILL."""
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        # Children left in a group after its leader exited (e.g. a simulation worker).
        for _name, proc in self.procs:
            _signal_group(proc.pid, signal.SIGKILL)
        self._stack.close()
        self.procs.clear()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(pgid, sig)


def watch(proc: subprocess.Popen[bytes], *, poll: Callable[[], None] | None, timeout: float,
          what: str, log: Path, interval: float = 1.0) -> None:
    """Wait for ``proc`` calling ``poll`` (progress) meanwhile; a timeout or failure raises."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if poll is not None:
            poll()
        if time.monotonic() > deadline:
            raise TrainingError(f"{what} did not finish within {timeout:.0f} s; see {log}")
        time.sleep(interval)
    if poll is not None:
        poll()
    if proc.returncode != 0:
        raise TrainingError(f"{what} failed with exit code {proc.returncode}; see {log}:\n"
                            f"{tail(log)}")
