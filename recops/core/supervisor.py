"""The one supervisor of child processes: start, wait until ready, watch, stop the whole group.

A child starts in a session of its own, so everything it starts (workers, task processes,
simulation processes) shares its process group and goes down with it. Its output goes to a log
file: what a failure quotes (its last lines) and what a watcher reads lines from.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx
import psutil

from recops.errors import RecopsError

TAIL_LINES = 20


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the kernel's pick; free until something binds it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def log_tail(path: str | Path, lines: int = TAIL_LINES) -> str:
    """The last lines of a log file (empty when it does not exist)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 5.0) -> bool:
    """``url`` answers a GET with 200 (no connection, or a broken answer, is a no)."""
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(pending: Callable[[], str | None], *, deadline: float,
             late: Callable[[str], str], exited: Callable[[], str | None] = lambda: None,
             error: type[RecopsError] = RecopsError,
             on_wait: Callable[[str], None] | None = None, interval: float = 1.0) -> None:
    """Poll until ``pending()`` returns None; until then it names what is awaited.

    Raises ``error`` at once with ``exited()``'s message when that returns one (a watched
    process has exited), and with ``late(what is awaited)`` past ``deadline`` (monotonic).
    ``on_wait`` hears what is awaited on each round.
    """
    while True:
        if (gone := exited()) is not None:
            raise error(gone)
        waiting = pending()
        if waiting is None:
            return
        if time.monotonic() > deadline:
            raise error(late(waiting))
        if on_wait is not None:
            on_wait(waiting)
        time.sleep(interval)


class _NewLines:
    """The complete lines appended to a file since an offset, read as they come."""

    def __init__(self, path: Path, offset: int) -> None:
        self.path, self.offset, self.partial = path, offset, b""

    def read(self, final: bool = False) -> list[str]:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        if final and self.partial:  # the child exited: its last line may lack a newline
            lines, self.partial = [*lines, self.partial], b""
        return [line.decode("utf-8", errors="replace").rstrip("\r") for line in lines]


class Child:
    """A started command: its process (leader of its own session and group) and its log."""

    def __init__(self, what: str, proc: subprocess.Popen[bytes], log: Path, offset: int,
                 error: type[RecopsError], grace: float) -> None:
        self.what, self.proc, self.log = what, proc, log
        self.error, self.grace = error, grace
        self._offset = offset  # where this child's output starts in its log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        """Its exit code, or None while it runs."""
        return self.proc.poll()

    def log_says(self) -> str:
        return f"its log {self.log} ends:\n{log_tail(self.log)}"

    def _exited(self) -> str | None:
        rc = self.proc.poll()
        if rc is None:
            return None
        return f"{self.what} exited with code {rc} before it was ready; {self.log_says()}"

    def _wait(self, pending: Callable[[], str | None], timeout: float,
              on_wait: Callable[[str], None] | None, interval: float) -> None:
        wait_for(pending, deadline=time.monotonic() + timeout, exited=self._exited,
                 error=self.error, on_wait=on_wait, interval=interval,
                 late=lambda waiting: (f"{self.what} was not ready within {timeout:g} s "
                                       f"(waiting for {waiting}); {self.log_says()}"))

    def wait_port(self, port: int, host: str = "127.0.0.1", timeout: float = 60.0,
                  on_wait: Callable[[str], None] | None = None) -> None:
        """Block until host:port accepts connections; raise if the child exits first or late."""
        self._wait(lambda: None if port_open(port, host) else f"{host}:{port} to open",
                   timeout, on_wait, 0.3)

    def wait_http(self, url: str, timeout: float = 240.0,
                  on_wait: Callable[[str], None] | None = None) -> None:
        """Block until ``url`` answers 200; raise if the child exits first or late."""
        self._wait(lambda: None if http_ok(url) else f"{url} to answer 200", timeout, on_wait,
                   0.5)

    def watch(self, timeout: float | None = None, *, on_line: Callable[[str], None] | None = None,
              on_progress: Callable[[], None] | None = None, interval: float = 0.5,
              check: bool = True) -> int:
        """Wait for the child to exit; returns its exit code.

        ``on_line`` hears each line it writes to its log, ``on_progress`` is called every
        ``interval`` seconds and once at the end. Past ``timeout``, or when a callback raises or
        the wait is interrupted, the child's group is stopped and the error raised; with
        ``check`` a nonzero exit code raises too.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        lines = _NewLines(self.log, self._offset) if on_line is not None else None
        try:
            while True:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=interval)
                done = self.proc.returncode is not None
                if lines is not None and on_line is not None:
                    for line in lines.read(final=done):
                        on_line(line)
                if on_progress is not None:
                    on_progress()
                if done:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise self.error(f"{self.what} did not finish within {timeout:g} s; "
                                     f"{self.log_says()}")
        except BaseException:
            self.stop()
            raise
        rc = self.proc.returncode
        if check and rc != 0:
            raise self.error(f"{self.what} failed with exit code {rc}; {self.log_says()}")
        return rc

    def _members(self) -> list[psutil.Process]:
        """Live (not zombie) processes of the child's group, the leader included."""
        if self.proc.returncode is not None and psutil.pid_exists(self.pid):
            return []  # reaped, and its PID (so any group with its id) is another program's
        live = []
        for proc in psutil.process_iter():
            with contextlib.suppress(OSError, psutil.Error):
                if os.getpgid(proc.pid) == self.pid and proc.status() != psutil.STATUS_ZOMBIE:
                    live.append(proc)
        return live

    def _signal(self, sig: int) -> None:
        if self.proc.returncode is not None and psutil.pid_exists(self.pid):
            return  # as in _members: the group id may now be another program's
        with contextlib.suppress(ProcessLookupError):  # nothing left in the group
            os.killpg(self.pid, sig)

    def stop(self, grace: float | None = None) -> None:
        """SIGTERM the child's group, SIGKILL what is left after ``grace`` seconds, reap it.

        The group signal reaches what the child started too, including what it left running
        after it exited.
        """
        grace = self.grace if grace is None else grace
        deadline = time.monotonic() + grace
        self._signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=grace)
        while self._members() and time.monotonic() < deadline:
            time.sleep(0.1)  # workers still shutting down after their leader
        self._signal(signal.SIGKILL)
        self.proc.wait()
        gone_by = time.monotonic() + 5.0  # SIGKILL is delivered, not yet acted on
        while self._members() and time.monotonic() < gone_by:
            time.sleep(0.05)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(what: str, cmd: Sequence[str], env: Mapping[str, str], log: Path, *,
          cwd: Path | None = None, append: bool = True, error: type[RecopsError] = RecopsError,
          grace: float = 30.0) -> Child:
    """Start ``cmd`` in a new session, its output (stdout and stderr) written to ``log``.

    ``what`` names it in messages; ``error`` is the exception its failures raise; ``grace`` is
    how long :meth:`Child.stop` waits after SIGTERM. ``append=False`` truncates the log first.
    ``cwd`` None runs it in this process's working directory.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab" if append else "wb") as out:
        offset = out.tell()
        proc = subprocess.Popen(list(cmd), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Child(what, proc, log, offset, error, grace)
