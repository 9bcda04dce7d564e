"""The platform's processes: each a supervised child (its own session), known by PID and start time.

A record names a process by (PID, start time), so a PID that the kernel gave to another program
after ours died is never mistaken for ours. Everything a component starts (LocalExecutor
workers, task processes, BentoML workers) stays in the component's session, so stopping the
session stops all of it, even after its leader was killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from recops.core.supervisor import start
from recops.errors import ConfigError
from recops.paths import CHECKOUT

# Start times from psutil are floats rebuilt from clock ticks: equal within this much.
_SAME_START = 0.05


@dataclass(frozen=True)
class ProcRecord:
    """One started component: its name, PID, start time (epoch seconds), port and log file."""

    name: str
    pid: int
    started: float
    port: int | None
    log: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProcRecord:
        port = data.get("port")
        return cls(name=str(data["name"]), pid=int(data["pid"]), started=float(data["started"]),
                   port=int(port) if port is not None else None, log=str(data["log"]))


def spawn(name: str, cmd: list[str], env: Mapping[str, str], log: Path,
          port: int | None = None) -> ProcRecord:
    """Start ``cmd`` in a new session with its output appended to ``log``; return its record.

    The record outlives this process: `down` in another process stops the component by it.
    """
    child = start(name, cmd, env, log, cwd=CHECKOUT)
    try:
        started = psutil.Process(child.pid).create_time()
    except psutil.NoSuchProcess:  # died at once: a record that is already dead
        started = 0.0
    return ProcRecord(name=name, pid=child.pid, started=started, port=port, log=str(log))


def _leader(rec: ProcRecord) -> psutil.Process | None:
    """The record's own process, or None when it is gone or the PID now belongs to another."""
    try:
        proc = psutil.Process(rec.pid)
        if abs(proc.create_time() - rec.started) > _SAME_START:
            return None
        return proc
    except psutil.Error:
        return None


def pid_reused(rec: ProcRecord) -> bool:
    """True when a process with the record's PID runs but is not the one recorded."""
    return psutil.pid_exists(rec.pid) and _leader(rec) is None


def alive(rec: ProcRecord) -> bool:
    """The recorded process runs (a zombie, dead but not yet reaped, counts as dead)."""
    proc = _leader(rec)
    try:
        return proc is not None and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def members(rec: ProcRecord) -> list[psutil.Process]:
    """Live processes of the record's session, its leader's descendants included.

    A session id cannot be handed to a new process while any member of the session lives, so
    the members left behind by a killed leader are still found, and a PID reused by another
    program (whose start time differs) finds nothing of that program.
    """
    leader = _leader(rec)
    if leader is None and psutil.pid_exists(rec.pid):
        return []  # the PID (and so any session with its id) now belongs to someone else
    found: dict[int, psutil.Process] = {}
    if leader is not None:
        with contextlib.suppress(psutil.Error):
            found = {p.pid: p for p in [leader, *leader.children(recursive=True)]}
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == rec.pid:
                found.setdefault(proc.pid, proc)
        except (OSError, psutil.Error):
            continue
    live = []
    for proc in found.values():
        with contextlib.suppress(psutil.Error):
            if proc.status() != psutil.STATUS_ZOMBIE:
                live.append(proc)
    return live


def stop_all(records: Iterable[ProcRecord], grace: float = 30.0) -> list[str]:
    """SIGTERM each leader (its own clean shutdown), then SIGTERM/SIGKILL what remains.

    Returns the names of the records that had a live process. Only processes of the recorded
    sessions are signalled.
    """
    recs = list(records)
    stopped = [r.name for r in recs if members(r)]
    leaders = [p for p in (_leader(r) for r in recs) if p is not None]
    for proc in leaders:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    psutil.wait_procs(leaders, timeout=grace)
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        rest = [p for r in recs for p in members(r)]
        if not rest:
            break
        for proc in rest:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
        psutil.wait_procs(rest, timeout=wait)
    for rec in recs:  # reap our own children (when `up` ran in this process) so none is a zombie
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(rec.pid, os.WNOHANG)
    return stopped


def check_ports(ports: Mapping[str, tuple[str, int]]) -> None:
    """Refuse ports that repeat or that something already listens on, before anything starts.

    ``ports`` maps what will listen (for the message) to its (host, port).
    """
    seen: dict[int, str] = {}
    for what, (host, port) in ports.items():
        if not 1 <= port <= 65535:
            raise ConfigError(f"{what} port {port} is not a TCP port (1-65535)")
        if port in seen:
            raise ConfigError(f"{what} and {seen[port]} are both given port {port}: "
                              "give each its own")
        seen[port] = what
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except socket.gaierror as exc:
                raise ConfigError(f"{what} host {host!r} is not an address of this machine "
                                  f"({exc.strerror})") from None
            except OSError as exc:
                raise ConfigError(f"{what} port {port} on {host} is not free ({exc.strerror}): "
                                  "choose another port or stop what holds it") from None
