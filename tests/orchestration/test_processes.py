"""The process supervisor against real children (waits for a port or a health URL, a child that
exits first, a timeout, a group stopped with its grandchildren, a watched run), and the
platform's process records: sessions found after their leader is killed, PIDs reused by
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
from recops.core.supervisor import free_port, http_ok, log_tail, start
from recops.errors import ConfigError, RecopsError, TrainingError
from recops.orchestration.platform_health import wait_healthy
from recops.orchestration.platform_state import PlatformState

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


# --- the supervisor: real children -------------------------------------------------------------

def _serve_after(delay: float, port: int) -> list[str]:
    """A child that listens on ``port`` after ``delay`` seconds, then waits."""
    return [sys.executable, "-c",
            "import socket, sys, time\n"
            f"time.sleep({delay})\n"
            "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n"
            "print('listening', flush=True)\n"
            "time.sleep(120)\n", str(port)]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert 1024 <= port <= 65535


def test_wait_port_returns_once_the_child_listens_and_stop_ends_it(tmp_path: Path) -> None:
    port = free_port()
    child = start("slow server", _serve_after(0.5, port), os.environ, tmp_path / "srv.log")
    try:
        heard: list[str] = []
        child.wait_port(port, timeout=30, on_wait=heard.append)
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        assert heard and heard[0] == f"127.0.0.1:{port} to open"
    finally:
        child.stop(grace=5)
    assert child.poll() is not None and _gone(child.pid)
    assert "listening" in log_tail(tmp_path / "srv.log")


def test_wait_http_returns_once_the_url_answers_200(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "health").write_text("ok")
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
           "--directory", str(tmp_path / "www")]
    with start("http.server", cmd, os.environ, tmp_path / "http.log") as child:
        child.wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
        assert http_ok(f"http://127.0.0.1:{port}/health")
        assert not http_ok(f"http://127.0.0.1:{port}/missing")  # 404 is not ready
    assert _gone(child.pid)


def test_a_child_that_exits_first_fails_the_wait_at_once_with_its_log_tail(
        tmp_path: Path) -> None:
    cmd = [sys.executable, "-c",
           "import sys; print('reading config.yaml'); print('fatal: bad key \"portt\"'); "
           "sys.exit(3)"]
    child = start("flower-superlink", cmd, os.environ, tmp_path / "link.log",
                  error=TrainingError)
    t0 = time.monotonic()
    with pytest.raises(TrainingError) as err:
        child.wait_port(free_port(), timeout=60)
    assert time.monotonic() - t0 < 20  # not the 60 s deadline
    msg = str(err.value)
    assert "flower-superlink exited with code 3 before it was ready" in msg
    assert str(tmp_path / "link.log") in msg and 'fatal: bad key "portt"' in msg


def test_a_health_wait_that_times_out_names_what_it_waited_for(tmp_path: Path) -> None:
    port = free_port()  # nothing will listen here
    cmd = [sys.executable, "-c", "print('starting up', flush=True); import time; time.sleep(60)"]
    with start("api-server", cmd, os.environ, tmp_path / "api.log") as child:
        t0 = time.monotonic()
        with pytest.raises(RecopsError) as err:
            child.wait_http(f"http://127.0.0.1:{port}/health", timeout=1.5)
        assert 1.5 <= time.monotonic() - t0 < 15
        assert child.poll() is None  # a failed wait leaves stopping to the caller
    msg = str(err.value)
    assert f"api-server was not ready within 1.5 s (waiting for http://127.0.0.1:{port}/health " \
           "to answer 200)" in msg
    assert "starting up" in msg


def test_stop_ends_a_grandchild_that_ignores_sigterm(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    leader = ("import subprocess, sys, time\n"
              "g = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
              "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)'])\n"
              f"open({str(pid_file)!r}, 'w').write(str(g.pid))\n"
              "time.sleep(120)\n")
    child = start("family", [sys.executable, "-c", leader], os.environ, tmp_path / "f.log")
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()):
        assert time.monotonic() < deadline, log_tail(tmp_path / "f.log")
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    assert os.getpgid(grandchild) == child.pid  # in the child's group
    t0 = time.monotonic()
    child.stop(grace=1)
    assert time.monotonic() - t0 < 10
    assert _gone(child.pid) and _gone(grandchild)


def test_watch_streams_lines_calls_progress_and_returns_the_exit_code(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    log.write_text("an earlier run's output\n")
    cmd = [sys.executable, "-c",
           "import time\nfor i in range(3):\n    print('step', i, flush=True); time.sleep(0.3)\n"
           "print('done', end='', flush=True)\n"]
    lines: list[str] = []
    ticks: list[int] = []
    rc = start("job", cmd, os.environ, log).watch(
        30, on_line=lines.append, on_progress=lambda: ticks.append(1), interval=0.1)
    assert rc == 0
    assert lines == ["step 0", "step 1", "step 2", "done"]  # not the earlier run's line
    assert len(ticks) >= 3
    assert log.read_text().startswith("an earlier run's output\nstep 0")  # appended
    start("job", [sys.executable, "-c", "print('again')"], os.environ, log,
          append=False).watch(30)
    assert log.read_text() == "again\n"


def test_watch_raises_on_failure_and_stops_the_child_at_its_timeout(tmp_path: Path) -> None:
    fail = [sys.executable, "-c", "import sys; print('no data in lake'); sys.exit(2)"]
    with pytest.raises(TrainingError, match=r"(?s)`flwr run` failed with exit code 2.*"
                                            r"no data in lake"):
        start("`flwr run`", fail, os.environ, tmp_path / "a.log", error=TrainingError).watch(30)
    assert start("x", fail, os.environ, tmp_path / "b.log").watch(30, check=False) == 2
    slow = start("slow job", [sys.executable, "-c", "import time; time.sleep(60)"], os.environ,
                 tmp_path / "c.log", grace=2)
    with pytest.raises(RecopsError, match="slow job did not finish within 1 s"):
        slow.watch(1, interval=0.1)
    assert slow.poll() is not None and _gone(slow.pid)  # stopped, not left running


# --- the platform's health wait on the supervisor's loop ---------------------------------------

def _state(tmp_path: Path, recs: dict[str, ProcRecord]) -> PlatformState:
    return PlatformState(home=str(tmp_path), airflow_host="127.0.0.1", airflow_port=free_port(),
                         service_host="127.0.0.1", service_port=free_port(),
                         password_file="nowhere", started_at="now", procs=recs)


def test_the_platform_wait_fails_at_once_when_a_component_exits(tmp_path: Path) -> None:
    rec = spawn("api-server", [sys.executable, "-c", "print('Address already in use')"],
                os.environ, tmp_path / "api-server.log")
    os.waitpid(rec.pid, 0)
    with pytest.raises(RecopsError) as err:
        wait_healthy(_state(tmp_path, {"api-server": rec}), time.monotonic() + 60)
    assert "api-server exited before it was healthy" in str(err.value)
    assert "Address already in use" in str(err.value)


def test_the_platform_wait_times_out_naming_what_is_not_healthy(tmp_path: Path) -> None:
    rec = spawn("api-server", [sys.executable, "-c", "import time; time.sleep(60)"], os.environ,
                tmp_path / "api-server.log")
    heard: list[str] = []
    try:
        with pytest.raises(RecopsError, match="the platform was not healthy in time; waiting "
                                              "for: api-server"):
            wait_healthy(_state(tmp_path, {"api-server": rec}), time.monotonic() + 1.5,
                         heard.append, only=["api-server"])
    finally:
        stop_all([rec], grace=5)
    assert heard and heard[0] == "waiting for api-server"
