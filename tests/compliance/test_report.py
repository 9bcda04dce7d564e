"""The report from records built with the real APIs (lake, ledger, accountant, gate, registry):
its figures and numbers are the records', a broken chain or a missing record is shown, bad input
is refused. The whole-pipeline versions are in test_report_pipeline.py."""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path
from typing import Any

import pytest

from recops.core.hashing import sha256_file
from tests.compliance.conftest import chromium_render, figure_data, small_tables, tiny_checkpoint
from tests.conftest import run_cli_text

RUN = "run-fed-dp"
EARLIER = "run-earlier"


def _write(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


@pytest.fixture(scope="module")
def fed_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Built once per module (registering is slow): a home with a federated DP model."""
    from recops.config import load_settings

    home = tmp_path_factory.mktemp("fed") / "home"
    return _build(load_settings(overrides={"home": home}))


@pytest.fixture
def fed_model(fed_home: dict[str, Any], home: Path) -> dict[str, Any]:
    """A private copy of the module's home for each test (tests tamper with records)."""
    import shutil

    shutil.copytree(fed_home["home"], home)
    return {**fed_home, "rdir": home / "runs" / RUN}


@pytest.fixture
def settings(fed_model: dict[str, Any], home: Path):  # noqa: ANN201 - the copied home's settings
    from recops.config import load_settings

    return load_settings(overrides={"home": home})


def _build(settings) -> dict[str, Any]:  # noqa: ANN001
    """A registered federated model with client-level DP, its run files and two ledger spends."""
    from federated.accounting import client_level_spend
    from recops.core.lake import Lake
    from recops.release import registry
    from recops.release.gate import decide
    from recops.training.privacy import PrivacyLedger, epsilon_for

    tables = small_tables()
    lake = Lake(settings.paths.lake)
    for name, df in tables.items():
        lake.append(name, df, source="test:small")
    version = lake.dataset_version()
    ledger = PrivacyLedger(settings.paths.privacy_ledger)
    sigma, q, delta, rounds_n = 0.8, 1.0, 1 / 30, 3
    ledger.append(client_level_spend(noise_multiplier=sigma, clipping_norm=1.0, sample_rate=q,
                                     rounds=2, delta=delta, mechanism="client-level-fixed",
                                     population="synthetic-seed42", run_id=EARLIER))
    spend = client_level_spend(noise_multiplier=sigma, clipping_norm=1.0, sample_rate=q,
                               rounds=rounds_n, delta=delta, mechanism="client-level-fixed",
                               population="synthetic-seed42", run_id=RUN)
    ledger.append(spend)
    rounds = []
    for r in range(rounds_n + 1):
        eps = epsilon_for(sigma, q, r, delta) if r else None
        rounds.append({"round": r, "participants": 3 if r else 0, "sampled": 3 if r else 0,
                       "failures": 0, "train_loss": 4.5 - 0.1 * r if r else None,
                       "global_ndcg@10": 0.05 + 0.01 * r, "global_hr@10": 0.1 + 0.02 * r,
                       "epsilon": {"client_level": eps, "sample_level": None}})
    history = [{"epoch": r["round"], "loss": r["train_loss"] or 0.0,
                "ndcg@10": r["global_ndcg@10"], "hr@10": r["global_hr@10"]} for r in rounds]
    rdir = settings.paths.runs / RUN
    _write(rdir / "history.json", history)
    _write(rdir / "federated_rounds.json", rounds)
    _write(rdir / "privacy.json", {**spend.to_dict(), "components": {
        "client_level": spend.to_dict()}})
    _write(rdir / "validation.json", {"passed": True, "report": str(settings.paths.gx / "x.html"),
                                      "dataset_version": version, "summary": {"tables": {
                                          "interactions": {"suite": "interactions", "rows": 900,
                                                           "passed": True, "evaluated": 16,
                                                           "failed": [], "warnings": []}}}})
    _write(rdir / "train.json", {"dataset_version": version, "mode": "federated",
                                 "epochs_run": rounds_n, "n_users": 30, "n_items": 40})
    eps_total, delta_total = ledger.total("synthetic-seed42")
    meta = {"run_id": RUN, "metrics": {"hr@10": 0.2, "ndcg@10": 0.09, "mrr": 0.07,
                                       "coverage@10": 0.5},
            "per_segment": {"activity=<20": {"hr@10": 0.25, "ndcg@10": 0.11, "mrr": 0.08,
                                             "n_users": 20.0},
                            "activity=20-49": {"hr@10": 0.1, "ndcg@10": 0.04, "mrr": 0.03,
                                               "n_users": 10.0}},
            "privacy": {**spend.to_dict(), "components": {"client_level": spend.to_dict()}},
            "privacy_total": {"population": "synthetic-seed42", "epsilon": eps_total,
                              "delta": delta_total, "budget_epsilon": 16.0},
            "data_version": version, "training_mode": "federated",
            "federated": {"num_clients": 3, "rounds": rounds_n, "completed_rounds": rounds_n,
                          "strategy": "fedavg", "partition": "iid", "client_dp": "fixed"},
            "validation": {"passed": True, "report": None},
            "baseline_metrics": {"hr@10": 0.1, "ndcg@10": 0.04, "mrr": 0.03, "coverage@10": 0.1}}
    decision = decide(settings, meta, None)
    _write(rdir / "gate.json", {"passed": decision.promote, "champion": None,
                                **decision.to_dict()})
    tag = registry.register(settings, tiny_checkpoint(list(range(1, 41))), meta,
                            items=tables["items"], interactions=tables["interactions"])
    _write(rdir / "register.json", {"tag": tag, "promoted": decision.promote})
    registry.promote(settings, tag, reason="test")
    return {"tag": tag, "rdir": rdir, "rounds": rounds, "history": history, "spend": spend,
            "meta": meta, "version": version, "home": settings.paths.home}


def test_report_figures_and_numbers_come_from_the_records(settings, fed_model) -> None:
    from recops.compliance.report import build_report
    from recops.core.audit import AuditLog
    from recops.training.privacy import PrivacyLedger

    path = build_report(settings, fed_model["tag"])
    assert path.parent == settings.paths.reports and path.suffix == ".html"
    html = path.read_text()
    figs = figure_data(html)
    assert set(figs) == {"training", "federated", "epsilon", "segments"}

    rounds = json.loads((fed_model["rdir"] / "federated_rounds.json").read_text())
    history = json.loads((fed_model["rdir"] / "history.json").read_text())
    assert figs["training"]["x"] == [h["epoch"] for h in history]
    assert figs["training"]["loss"] == [h["loss"] for h in history]
    assert figs["federated"]["participants"] == [r["participants"] for r in rounds]
    assert figs["federated"]["global_ndcg@10"] == [r["global_ndcg@10"] for r in rounds]
    assert figs["federated"]["epsilon_client_level"] == [r["epsilon"]["client_level"]
                                                         for r in rounds]
    entries = PrivacyLedger(settings.paths.privacy_ledger).entries("synthetic-seed42")
    cum = [sum(e.epsilon for e in entries[: i + 1]) for i in range(len(entries))]
    assert figs["epsilon"]["cumulative_epsilon"] == pytest.approx(cum)
    assert figs["epsilon"]["run_id"] == [EARLIER, RUN]
    assert figs["epsilon"]["budget_epsilon"] == [settings.privacy.budget_epsilon] * 2
    per_seg = fed_model["meta"]["per_segment"]
    assert figs["segments"]["x"] == sorted(per_seg)
    assert figs["segments"]["ndcg@10"] == [per_seg[s]["ndcg@10"] for s in sorted(per_seg)]
    assert html.count('src="data:image/png;base64,') == 4

    spend = fed_model["spend"]
    # The guarantee in words and numbers, each taken from the spend record.
    assert f"ε = {spend.epsilon:.4g}" in html and f"δ = {spend.delta:.3g}" in html
    assert f"e^ε = {math.exp(spend.epsilon):.3g}" in html
    assert "one client (a whole group of users" in html and "accountant RDP" in html
    assert f"noise multiplier σ = {spend.noise_multiplier:.4g}" in html
    # What the guarantee covers and what it does not, in plain words.
    assert "Covered: the model&#39;s weights" in html and "Not covered: the quality figures" in html
    assert f"ledger sums to ε = {sum(e.epsilon for e in entries):.4g}" in html
    # The largest gap between segments, from the per-segment metrics.
    gap = per_seg["activity=<20"]["ndcg@10"] - per_seg["activity=20-49"]["ndcg@10"]
    assert f"Largest gap on ndcg@10: <strong>{gap:.4f}</strong>" in html
    # Federated participation and the gate's reasons.
    assert "3 clients, 3 of 3 rounds completed" in html
    assert "Secure aggregation: off: the server saw each sampled client" in html
    gate = json.loads((fed_model["rdir"] / "gate.json").read_text())
    for reason in gate["reasons"]:
        assert escape(reason) in html
    # Lineage and chain status; the report itself is recorded by content hash.
    assert fed_model["version"] in html and "verified" in html
    rec = AuditLog(settings.paths.audit_log).records()[-1]
    assert rec["stage"] == "report" and rec["inputs"]["tag"] == fed_model["tag"]
    assert rec["outputs"]["html_sha256"] == sha256_file(path)
    assert "features.json" in rec["details"]["missing_records"]  # no Feast in this test
    assert 'id="missing-records"' in html


def test_report_of_champion_and_of_run_id_are_the_same_model(settings, fed_model) -> None:
    from recops.compliance.report_data import gather

    assert gather(settings).tag == fed_model["tag"]
    assert gather(settings, run_id=RUN).tag == fed_model["tag"]


def test_report_shows_a_broken_audit_chain(settings, fed_model) -> None:
    from recops.compliance.report import build_report
    from recops.core.audit import AuditLog

    log = AuditLog(settings.paths.audit_log)
    lines = log.path.read_text().splitlines()
    rec = json.loads(lines[0])
    rec["result"] = "tampered"
    lines[0] = json.dumps(rec, sort_keys=True)
    log.path.write_text("\n".join(lines) + "\n")
    html = build_report(settings, fed_model["tag"]).read_text()
    assert 'id="chain-broken"' in html and "record seq 0" in html and "BROKEN" in html


def test_report_refuses_unknown_models_and_runs(settings, fed_model) -> None:
    from recops.compliance.report import build_report
    from recops.errors import RegistryError

    with pytest.raises(RegistryError, match="not in the store"):
        build_report(settings, "recops-recommender:doesnotexist")
    with pytest.raises(RegistryError, match="registered no model"):
        build_report(settings, run_id="no-such-run")


def test_unreadable_run_record_is_an_error_naming_the_file(settings, fed_model) -> None:
    from recops.compliance.report import build_report
    from recops.errors import DataError

    (fed_model["rdir"] / "gate.json").write_text("{half")
    with pytest.raises(DataError, match="gate.json"):
        build_report(settings, fed_model["tag"])


def test_report_renders_in_headless_chromium_without_console_errors(settings, fed_model) -> None:
    from recops.compliance.report import build_report

    path = build_report(settings, fed_model["tag"])
    console, dom = chromium_render(path)
    assert console == []
    assert 'data-figures="4"' in dom  # the page's script ran and parsed the figure data
    assert "Compliance report" in dom


def test_cli_report_audit_verify_and_show(monkeypatch, capsys, settings, fed_model,
                                          tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    code, text = run_cli_text(monkeypatch, capsys, "report", fed_model["tag"], "--out", str(out))
    assert code == 0 and out.is_file() and str(out) in text
    code, text = run_cli_text(monkeypatch, capsys, "report", "nope")
    assert code == 2 and "error:" in text and "Traceback" not in text
    code, text = run_cli_text(monkeypatch, capsys, "audit", "verify")
    assert code == 0 and "intact" in text
    code, text = run_cli_text(monkeypatch, capsys, "audit", "show", "--stage", "report", "--json")
    assert code == 0 and json.loads(text.splitlines()[-1])["stage"] == "report"
    code, text = run_cli_text(monkeypatch, capsys, "audit", "show", "--last", "0")
    assert code == 2  # click's range check
    log = settings.paths.audit_log
    lines = log.read_text().splitlines()
    del lines[1]
    log.write_text("\n".join(lines) + "\n")
    code, text = run_cli_text(monkeypatch, capsys, "audit", "verify")
    assert code == 1 and "broken at seq 1" in text


def test_pdf_is_printed_by_chromium_and_recorded(settings, fed_model) -> None:
    from recops.compliance.chromium import chromium
    from recops.compliance.report import build_report
    from recops.core.audit import AuditLog

    if chromium() is None:
        chromium_render(Path("/nonexistent"))  # skips (fails in CI) with the reason
    path = build_report(settings, fed_model["tag"], pdf=True)
    pdf = path.with_suffix(".pdf")
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 20_000
    rec = AuditLog(settings.paths.audit_log).records()[-1]
    assert rec["outputs"]["pdf_sha256"] == sha256_file(pdf)


def test_report_shows_the_policy_estimate_when_one_was_made(settings, fed_model, monkeypatch,
                                                           capsys) -> None:
    import numpy as np

    from recops.compliance.report import build_report
    from recops.policy.policies import EpsilonGreedy
    from recops.policy.simulator import make_world, simulate_log
    from tests.policy.conftest import write_logs

    assert 'id="policy-estimates"' not in build_report(settings, fed_model["tag"]).read_text()
    logging = EpsilonGreedy(0.3, 10)
    write_logs(settings, simulate_log(make_world(5), logging, 400, np.random.default_rng(5)),
               logging)
    code, text = run_cli_text(monkeypatch, capsys, "--home", str(settings.home), "policy",
                              "evaluate", "--policy", "greedy")
    assert code == 0, text
    saved = json.loads((settings.paths.reports / "policy_evaluation.json").read_text())
    html = build_report(settings, fed_model["tag"]).read_text()
    assert 'id="policy-estimates"' in html and "recops policy evaluate" in html
    for name in ("IPS", "SNIPS", "DR"):
        est = saved["estimates"][name.lower()]
        assert f"<td>{name}</td><td>{est['value']:.4f}</td>" in html
    assert f"from {saved['lists']} logged lists" in html


def test_privacy_words_say_what_dp_sgd_covers() -> None:
    """A DP-SGD model's words say its last epoch was kept (nothing chosen on private data);
    a DP-FedAvg model's do not claim it; both say what is not covered."""
    from recops.compliance.report_data import privacy_in_words

    def spend(mechanism: str) -> dict:
        return {"privacy": {"epsilon": 8.0, "delta": 1e-5, "noise_multiplier": 1.8,
                            "max_grad_norm": 1.0, "sample_rate": 0.2, "steps": 150,
                            "epochs": 30, "mechanism": mechanism, "accountant": "rdp",
                            "unit": "user"}}

    total = {"budget_epsilon": 16.0, "runs": 1, "population": "p", "epsilon_now": 8.0,
             "delta_now": 1e-5, "left_now": 8.0}
    sgd = " ".join(privacy_in_words(spend("dp-sgd-ghost"), total))
    fed = " ".join(privacy_in_words(spend("dp-fedavg"), total))
    for words in (sgd, fed):
        assert "Covered: the model's weights" in words
        assert "Not covered: the quality figures in this report and the gate's decision" in words
    assert "kept the last model" in sgd and "kept the last model" not in fed
