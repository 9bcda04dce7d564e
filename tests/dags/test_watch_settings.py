"""The watcher's interval and threshold come from settings (platform.feedback_watch_minutes,
platform.min_new_events), read when the DAG file is parsed: the defaults, and a YAML config."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROBE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)
dag = bag.dags.get("recops_feedback_watch")
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}}
if dag is not None:
    out.update(every=dag.timetable.delta.total_seconds(), min_events=dag.params["min_events"])
print("PROBE" + json.dumps(out))
"""


def _parse(tmp: Path, config: str | None) -> dict:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "AIRFLOW_HOME": str(tmp / "airflow"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp / 'airflow.db'}",
           "RECOPS_HOME": str(tmp / "home"), "PYTHONPATH": str(REPO)}
    if config is not None:
        (tmp / "recops.yaml").write_text(config)
        env["RECOPS_CONFIG"] = str(tmp / "recops.yaml")
    proc = subprocess.run([sys.executable, "-c", PROBE,
                           str(REPO / "dags" / "recops_feedback_watch.py")],
                          env=env, cwd=tmp, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(next(ln for ln in proc.stdout.splitlines()
                                if ln.startswith("PROBE"))[len("PROBE"):]))


def test_the_watcher_runs_every_5_minutes_and_fires_at_100_events_by_default(
        tmp_path: Path) -> None:
    got = _parse(tmp_path, None)
    assert got == {"errors": {}, "every": timedelta(minutes=5).total_seconds(),
                   "min_events": 100}


def test_the_platform_settings_set_the_watchers_interval_and_threshold(tmp_path: Path) -> None:
    got = _parse(tmp_path, "platform:\n  feedback_watch_minutes: 0.25\n  min_new_events: 7\n")
    assert got == {"errors": {}, "every": 15.0, "min_events": 7}
    bad = tmp_path / "bad"
    bad.mkdir()
    got = _parse(bad, "platform:\n  feedback_watch_minutes: 0\n")
    (err,) = got["errors"].values()  # an import error the UI shows, naming the setting
    assert "platform.feedback_watch_minutes" in err and "every" not in got
