"""benchmarks/bench_ingest.py: a small run prints one row per stage and format; bad flags exit 2."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_ingest.py"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=600, check=False, env=env, cwd=SCRIPT.parents[1])


@pytest.mark.slow
@pytest.mark.integration
def test_small_run_reports_each_stage(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200"}
    got = _run("--sizes", "20000", "--work", str(tmp_path / "work"), env=env)
    assert got.returncode == 0, got.stdout + got.stderr
    rows = [[c.strip() for c in line.strip("│ ").split("│")]
            for line in got.stdout.splitlines() if re.match(r"^│\s+20,000\s+│", line)]
    assert [(r[1], r[3]) for r in rows] == [("csv", "ingest"), ("csv", "validate + land"),
                                            ("parquet", "ingest"),
                                            ("parquet", "validate + land")]
    for r in rows:
        assert float(r[4]) > 0 and 50 < float(r[5].replace(",", "")) < 20_000  # s, MB
    assert not any((tmp_path / "work").glob("events-*"))  # data files removed unless --keep


@pytest.mark.parametrize("args, says", [
    (["--sizes", "10"], "at least 1000"),
    (["--sizes", "many"], "expected numbers of events"),
    (["--formats", "xlsx"], "expected csv and/or parquet"),
    (["--work", str(SCRIPT.parents[1] / "data")], "outside the repository"),
])
def test_bad_flags_exit_2_with_a_message(args: list[str], says: str) -> None:
    got = _run(*args)
    assert got.returncode == 2 and says in got.stderr and "Traceback" not in got.stderr
