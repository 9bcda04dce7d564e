"""`recops models|gate|serve|package` from the command line, good and bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from recops.release import registry
from tests.release.test_registry import INTER, ITEMS
from tests.serving.conftest import REPO, make_checkpoint, meta


def run(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    from recops.cli import main

    monkeypatch.setattr(sys, "argv", ["recops", *args])
    monkeypatch.setenv("COLUMNS", "160")  # wide tables: nothing truncated
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    cap = capsys.readouterr()
    return code, cap.out + cap.err


@pytest.fixture
def two_models(settings):
    ids = [10, 20, 30, 40]
    good = registry.register(settings, make_checkpoint(ids, 1), meta("run1", ndcg=0.3),
                             items=ITEMS, interactions=INTER)
    bad = registry.register(settings, make_checkpoint(ids, 2), meta("run2", ndcg=0.1),
                            items=ITEMS, interactions=INTER)
    return good, bad


@pytest.mark.integration  # the real BentoML model store
def test_models_list_show_promote_rollback(monkeypatch, capsys, settings, two_models):
    good, bad = two_models
    code, text = run(monkeypatch, capsys, "models", "list")
    versions = [t.split(":")[1] for t in (good, bad)]
    assert code == 0 and all(v in text for v in versions) and "0.3000" in text
    code, text = run(monkeypatch, capsys, "gate", good)
    assert code == 0 and "PROMOTE" in text
    assert registry.champion_tag(settings) == good
    code, text = run(monkeypatch, capsys, "gate", bad)
    assert code == 2 and "REJECT" in text and "below the champion" in text
    code, text = run(monkeypatch, capsys, "models", "promote", bad)
    assert code == 2 and "not promoted" in text
    assert registry.champion_tag(settings) == good
    code, text = run(monkeypatch, capsys, "models", "promote", "--force", bad)
    assert code == 0 and registry.champion_tag(settings) == bad
    code, text = run(monkeypatch, capsys, "models", "show", "champion")
    assert code == 0 and bad in text and "(champion)" in text and "run2" in text
    code, text = run(monkeypatch, capsys, "models", "rollback")
    assert code == 0 and good in text and registry.champion_tag(settings) == good


@pytest.mark.integration  # the real BentoML model store
def test_cli_errors_are_one_line(monkeypatch, capsys, settings):
    code, text = run(monkeypatch, capsys, "models", "show", "nope")
    assert code == 2 and "not in the store" in text and "Traceback" not in text
    code, text = run(monkeypatch, capsys, "models", "rollback")
    assert code == 2 and "nothing to roll back" in text
    code, text = run(monkeypatch, capsys, "serve", "--port", "8")
    assert code == 2 and "no champion" in text
    code, text = run(monkeypatch, capsys, "serve", "--port", "70000")
    assert code == 2 and "serving.port" in text


@pytest.mark.integration
def test_package_builds_a_bento_offline(monkeypatch, capsys, settings, two_models):
    registry.promote(settings, two_models[0])
    code, text = run(monkeypatch, capsys, "package")
    assert code == 0, text
    assert "built bento recops:" in text
    bento = text.split("built bento ")[1].split()[0]
    listed = subprocess.run([str(REPO / ".venv" / "bin" / "bentoml"), "get", bento, "-o", "json"],
                            env={"BENTOML_HOME": str(settings.paths.bentoml_home),
                                 "BENTOML_DO_NOT_TRACK": "true", "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, check=True).stdout
    assert two_models[0].split(":")[1] in listed  # the champion travels in the Bento
