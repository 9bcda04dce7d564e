"""The DP benchmarks refuse bad flags with a message and exit status 2, before any training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize(("script", "args", "says"), [
    ("bench_dp_fedavg.py", ["--users", "500"], "--users must be at least 1000"),
    ("bench_dp_fedavg.py", ["--fraction", "0"], "--fraction must lie in (0, 1]"),
    ("bench_dp_fedavg.py", ["--rounds", "0"], "--rounds and --local-epochs"),
    ("bench_dp_fedavg.py", ["--epsilon", "-1"], "must be > 0"),
    ("bench_dp_fedavg.py", ["--client-lr", "-1"], "--client-lr must be >= 0"),
    ("bench_dp_fedavg.py", ["--strategies", "fedsgd"], "--strategies must be among"),
    ("bench_dp_fedavg.py", ["--client-optimizer", "lbfgs"], "invalid choice"),
    ("bench_dp_clipping.py", ["--users", "10"], "--users must be at least 100"),
    ("bench_dp_clipping.py", ["--modes", "median"], "--modes must be among"),
    ("bench_dp_clipping.py", ["--epsilons", "0"], "--epsilons must be > 0"),
    ("bench_fedadam_arith.py", ["--users", "999"], "--users must be at least 1000"),
    ("bench_fedadam_arith.py", ["--fraction", "1.5"], "--fraction must lie in (0, 1]"),
    ("bench_fedadam_arith.py", ["--server-lr", "0"], "must be > 0"),
    ("bench_fedadam_arith.py", ["--forms", "yogi"], "--forms must be among"),
    ("bench_fedadam_arith.py", ["--seeds", "x"], "invalid int value"),
    ("bench_own_superlink.py", ["--clients", "1"], "--clients must be at least 2"),
    ("bench_own_superlink.py", ["--rounds", "0"], "--rounds must be at least 1"),
    ("bench_own_superlink.py", ["--clients", "4", "--users", "90"], "--users must be at least 100"),
    ("bench_own_superlink.py", ["--items", "5"], "--items must be at least 20"),
])
def test_bad_flags_exit_2_with_a_message(script, args, says) -> None:
    got = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True,
                         text=True, timeout=120, check=False)
    assert got.returncode == 2, got.stdout + got.stderr
    assert says in got.stderr and "Traceback" not in got.stderr
