"""The report of models the real pipeline stages produced: centralised, then federated with DP.

Real GX validation, PyTorch training, Flower simulation with client-level DP, the accountant,
the gate and the BentoML registry. Only the Feast point-in-time read is replaced by its pandas
definition (``splits.history_before``, held equal to Feast by the features tests) to keep this
module to a couple of minutes; the features stage's own report section is then marked missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.compliance.conftest import chromium_render, figure_data
from tests.dags.tiny import tiny_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FEDERATED = {"train.mode": "federated", "federated.num_clients": 2, "federated.rounds": 2,
             "federated.min_clients": 2, "federated.client_dp": "fixed",
             "federated.client_noise_multiplier": 0.7}


def _stages(settings, run_id: str) -> dict[str, Any]:  # noqa: ANN001
    from recops.orchestration import pipeline

    staged = pipeline.ingest(settings, run_id)
    accepted = pipeline.validate(settings, run_id, staged["staged_id"])
    trained = pipeline.train(settings, run_id, accepted["dataset_version"])
    rdir = trained["run_dir"]
    pipeline.evaluate(settings, run_id, rdir)
    pipeline.gate(settings, run_id, rdir)
    reg = pipeline.register(settings, run_id, rdir)
    return {**reg, "run_dir": Path(rdir), "report": pipeline.report(settings, run_id, rdir)}


def _pit(settings, labels):  # noqa: ANN001, ANN202 - Feast's point-in-time answer, in pandas
    from recops import schema
    from recops.core.lake import Lake
    from recops.training.splits import history_before

    inter = Lake(settings.paths.lake).read(schema.INTERACTIONS)
    return history_before(inter, labels, settings.model.max_len)


def _run(home: Path, run_id: str, **extra: Any) -> tuple[Any, dict[str, Any]]:
    from recops.features import feast_store

    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("RECOPS_")]:
            mp.delenv(key)
        mp.setattr(feast_store, "historical_sequences", _pit)
        settings = tiny_settings(home, **extra)
        return settings, _stages(settings, run_id)


@pytest.fixture(scope="module")
def home_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pipeline") / "home"


@pytest.fixture(scope="module")
def central(home_dir: Path) -> dict[str, Any]:
    settings, out = _run(home_dir, "run-central")
    return {"settings": settings, "central": out}


@pytest.fixture(scope="module")
def runs(central: dict[str, Any], home_dir: Path) -> dict[str, Any]:
    """A federated DP run after the centralised one, in the same home (the ledger is shared)."""
    fed, out = _run(home_dir, "run-federated", **FEDERATED)
    return {**central, "fed_settings": fed, "federated": out}


def test_pipeline_report_stage_writes_the_centralised_report(central) -> None:
    from recops.core.audit import AuditLog

    runs = central
    a = runs["central"]
    path = Path(a["report"]["report"])
    assert path.is_file() and path.parent == runs["settings"].paths.reports
    html = path.read_text()
    figs = figure_data(html)
    history = json.loads((a["run_dir"] / "history.json").read_text())
    assert figs["training"]["loss"] == [h["loss"] for h in history]
    metrics = json.loads((a["run_dir"] / "metrics.json").read_text())
    seg = metrics["per_segment"]
    assert figs["segments"]["x"] == sorted(seg)
    assert figs["segments"]["ndcg@10"] == [seg[s]["ndcg@10"] for s in sorted(seg)]
    assert "federated" not in figs and "epsilon" not in figs  # no DP, no rounds
    assert "trained without differential privacy" in html
    assert f"{metrics['overall']['ndcg@10']:.4f}" in html
    val = json.loads((a["run_dir"] / "validation.json").read_text())
    assert val["passed"] and Path(val["report"]).resolve().as_uri() in html  # Data Docs link
    recs = [r for r in AuditLog(runs["settings"].paths.audit_log).records()
            if r["stage"] == "report" and r["run_id"] == "run-central"]
    assert recs and recs[-1]["outputs"]["html"] == str(path)


def test_federated_dp_report_matches_rounds_and_ledger(runs) -> None:
    from recops.training.privacy import PrivacyLedger, default_population

    b, s = runs["federated"], runs["fed_settings"]
    html = Path(b["report"]["report"]).read_text()
    figs = figure_data(html)
    rounds = json.loads((b["run_dir"] / "federated_rounds.json").read_text())
    assert figs["federated"]["x"] == [r["round"] for r in rounds]
    assert figs["federated"]["participants"] == [r["participants"] for r in rounds]
    assert figs["federated"]["epsilon_client_level"] == [r["epsilon"]["client_level"]
                                                         for r in rounds]
    entries = PrivacyLedger(s.paths.privacy_ledger).entries(default_population(s))
    assert [e.run_id for e in entries] == ["run-federated"]
    assert figs["epsilon"]["cumulative_epsilon"] == pytest.approx([entries[0].epsilon])
    spend = json.loads((b["run_dir"] / "privacy.json").read_text())
    assert spend["unit"] == "client" and spend["epsilon"] == pytest.approx(entries[0].epsilon)
    assert f"ε = {spend['epsilon']:.4g}" in html and "one client (a whole group" in html
    assert f"2 clients, {len([r for r in rounds if r['round']])} of 2 rounds" in html
    gate = json.loads((b["run_dir"] / "gate.json").read_text())
    assert ("promote" if gate["passed"] else "keep the champion") in html


def test_centralised_pipeline_report_renders_in_chromium(central) -> None:
    console, dom = chromium_render(Path(central["central"]["report"]["report"]))
    assert console == [] and "Compliance report" in dom


def test_federated_pipeline_report_renders_in_chromium(runs) -> None:
    console, dom = chromium_render(Path(runs["federated"]["report"]["report"]))
    assert console == [] and 'data-figures="4"' in dom
