"""benchmarks/bench_accountants.py: the table a user reads to choose privacy.accountant, and its
refusal of bad flags."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_accountants.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=300, check=False)


def test_prv_needs_less_noise_than_rdp_for_the_same_epsilon() -> None:
    got = _run("--users", "5000", "--epsilons", "2", "8")
    assert got.returncode == 0, got.stderr
    rows = [line for line in got.stdout.splitlines() if re.match(r"^│\s+5,000\s+│", line)]
    assert len(rows) == 2  # one per ε
    for row in rows:
        cells = [c.strip() for c in row.strip("│ ").split("│")]
        eps, rdp, prv, ratio, rdp_eps = (float(c) for c in cells[1:6])
        assert 0 < prv < rdp and ratio == pytest.approx(prv / rdp, abs=1e-3)
        assert rdp_eps > eps  # RDP over-states what PRV's noise costs


@pytest.mark.parametrize("args", [["--users", "1"], ["--epsilons", "0"],
                                  ["--batch-fraction", "1.5"], ["--users", "many"]])
def test_bad_flags_exit_2_with_a_message(args) -> None:
    got = _run(*args)
    assert got.returncode == 2 and "error:" in got.stderr and "Traceback" not in got.stderr
