"""The platform's process records: sessions found after their leader is killed, PIDs reused by
another program never signalled, busy and repeated ports refused."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import psutil
import pytest

from recops.core.processes import (
    ProcRecord,
    alive,
    check_ports,
    members,
    pid_reused,
    spawn,
    stop_all,
)
from recops.errors import ConfigError

# A leader that starts a child which ignores SIGTERM (as a busy worker might), then waits.
FAMILY = ("import signal, subprocess, sys, time\n"
          "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
          "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)'])\n"
          "time.sleep(120)\n")


def _wait_members(rec: ProcRecord, n: int) -> list[psutil.Process]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = members(rec)
        if len(found) >= n:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{rec.name}: {len(members(rec))} processes, expected {n}")


def test_a_killed_leaders_children_are_found_and_stopped(tmp_path: Path) -> None:
    rec = spawn("family", [sys.executable, "-c", FAMILY], os.environ, tmp_path / "f.log")
    procs = _wait_members(rec, 2)
    assert alive(rec) and not pid_reused(rec)
    os.kill(rec.pid, signal.SIGKILL)
    os.waitpid(rec.pid, 0)  # reaped: the PID is free, the child lives on in the session
    assert not alive(rec)
    orphans = members(rec)
    assert [p.pid for p in orphans] == [p.pid for p in procs if p.pid != rec.pid]
    assert stop_all([rec], grace=1) == ["family"]
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs)
    assert stop_all([rec], grace=1) == []  # nothing left: nothing stopped


def test_a_reused_pid_is_not_ours() -> None:
    me = psutil.Process()
    # This test's own PID, but recorded with another start time: a PID the kernel reused.
    rec = ProcRecord("stale", me.pid, me.create_time() - 1000, None, "x.log")
    assert pid_reused(rec) and not alive(rec)
    assert members(rec) == []
    assert stop_all([rec], grace=0.1) == []
    assert me.is_running()


def test_a_sigterm_stops_a_well_behaved_component(tmp_path: Path) -> None:
    rec = spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], os.environ,
                tmp_path / "s.log", port=1234)
    assert alive(rec)
    assert ProcRecord.from_dict(rec.to_dict()) == rec
    t0 = time.monotonic()
    assert stop_all([rec]) == ["sleeper"]
    assert time.monotonic() - t0 < 10 and not alive(rec)


def test_ports_refused_when_busy_repeated_or_out_of_range() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is not free"):
            check_ports({"Airflow api-server": ("127.0.0.1", port)})
    with pytest.raises(ConfigError, match="both given port 8123"):
        check_ports({"a": ("127.0.0.1", 8123), "b": ("127.0.0.1", 8123)})
    with pytest.raises(ConfigError, match="not a TCP port"):
        check_ports({"a": ("127.0.0.1", 70000)})
    with pytest.raises(ConfigError, match="not an address of this machine"):
        check_ports({"a": ("no-such-host.invalid", 8123)})
