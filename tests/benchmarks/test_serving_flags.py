"""benchmarks/bench_serving.py refuses bad flags with a message and exit status 2, before it
builds or serves anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_serving.py"


@pytest.mark.parametrize(("args", "says"), [
    (["--data", "/nonexistent/ml-latest-small"], "no such folder"),
    (["--data", "{tmp}"], "unknown MovieLens dataset"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--set", "serving.workers"], "KEY=VALUE"),
])
def test_bad_flags_exit_2_with_a_message(tmp_path, args, says) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    got = subprocess.run([sys.executable, str(SCRIPT), "--quick", *args], capture_output=True,
                         text=True, timeout=300, check=False)
    assert got.returncode == 2, got.stdout + got.stderr
    assert says in got.stderr and "Traceback" not in got.stderr
