"""The gate on real Great Expectations runs: the bad-input corpus ends in a clear error or a
quarantine that keeps every submitted row; good batches land in the lake; Data Docs are built."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recops import schema
from recops.config import load_settings
from recops.core.audit import AuditLog, verify
from recops.core.lake import Lake
from recops.data.tables import Tables, stage
from recops.errors import DataError, ValidationFailed
from tests.validation.frames import (
    SOURCE,
    make_interactions,
    make_items,
    make_users,
    parquet_rows,
    stage_raw,
)
from validation import gate, quarantine

pytestmark = pytest.mark.integration

Frame = Callable[[], pd.DataFrame]


def _set(row: int, col: str, value: object) -> Frame:
    def build() -> pd.DataFrame:
        df = make_interactions(200, seed=3)
        if isinstance(value, str):
            df[col] = df[col].astype(object)
        df.loc[row, col] = value
        return df
    return build


def _dup() -> pd.DataFrame:
    df = make_interactions(200, seed=3)
    return pd.concat([df, df.iloc[[5]]], ignore_index=True)


def _future() -> pd.DataFrame:
    df = make_interactions(200, seed=3)
    df.loc[7, schema.EVENT_TIMESTAMP] = pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=30)
    return df


# name -> (frame, a check that must be among the blocking failures)
CORPUS: dict[str, tuple[Frame, str]] = {
    "missing column": (lambda: make_interactions(200, seed=3).drop(columns=[schema.RATING]),
                       "schema"),
    "extra column": (lambda: make_interactions(200, seed=3).assign(colour="red"), "schema"),
    "null user_id": (lambda: make_interactions(200, seed=3).astype({schema.USER_ID: "float64"})
                     .assign(**{schema.USER_ID: lambda d: d[schema.USER_ID].where(d.index != 4)}),
                     "not_null"),
    "rating 0": (_set(4, schema.RATING, 0.0), "range"),
    "rating 6": (_set(4, schema.RATING, 6.0), "range"),
    "rating NaN": (_set(4, schema.RATING, np.nan), "not_null"),
    "unknown event_type": (_set(9, schema.EVENT_TYPE, "purchased"), "event_type"),
    "duplicate events": (_dup, "unique"),
    "future timestamps": (_future, "timestamps"),
    "unknown item_id": (_set(2, schema.ITEM_ID, 99_999), "referential"),
}


def _failed_checks(v: object) -> set[str]:
    return {c.check for t in v.tables.values() for c in t.failed}  # type: ignore[attr-defined]


@pytest.mark.parametrize("case", list(CORPUS))
def test_bad_batch_is_quarantined_whole(case: str, settings, lake: Lake, tmp_path: Path) -> None:
    build, check = CORPUS[case]
    df = build()
    path = tmp_path / "interactions.parquet"
    df.to_parquet(path, index=False)
    before = len(lake.read(schema.INTERACTIONS))

    v, accepted, qpath = gate.submit_files(settings, path, land=True)

    assert not v.passed and accepted is None
    assert check in _failed_checks(v), v.failed
    assert qpath is not None and (qpath / quarantine.REASON).exists()
    assert check in (qpath / quarantine.REASON).read_text()
    assert parquet_rows(qpath) == {"interactions": len(df)}  # every submitted row kept
    assert (qpath / "interactions.parquet").read_bytes() == path.read_bytes()  # untouched
    assert len(lake.read(schema.INTERACTIONS)) == before  # nothing landed
    assert json.loads((qpath / quarantine.RESULT).read_text())["interactions"]["success"] is False


def test_a_view_and_a_click_in_the_same_second_both_land(settings, lake: Lake,
                                                          tmp_path: Path) -> None:
    df = make_interactions(200, seed=3)
    click = df.iloc[[5]].assign(**{schema.EVENT_TYPE: "click", schema.RATING: np.nan})
    path = tmp_path / "interactions.parquet"
    pd.concat([df, click], ignore_index=True).to_parquet(path, index=False)
    before = len(lake.read(schema.INTERACTIONS))
    v, accepted, _ = gate.submit_files(settings, path, land=True)
    assert v.passed and accepted is not None, v.failed
    assert len(lake.read(schema.INTERACTIONS)) == before + 201


def test_string_ratings_in_csv_are_quarantined(settings, lake: Lake, tmp_path: Path) -> None:
    path = tmp_path / "interactions.csv"
    make_interactions(50, seed=3).astype({schema.RATING: object}).assign(
        **{schema.RATING: ["four"] * 50}).to_csv(path, index=False)
    v, _, qpath = gate.submit_files(settings, path)
    failed = [c for t in v.tables.values() for c in t.failed]
    assert {"schema", "range"} <= {c.check for c in failed}
    assert any("four" in str(c.sample) for c in failed)
    assert len(pd.read_csv(qpath / "interactions.csv")) == 50


UNREADABLE: dict[str, tuple[str, bytes]] = {
    "empty file": ("interactions.csv", b""),
    "header-only CSV": ("interactions.csv", b"user_id,item_id,rating,event_type,event_timestamp\n"),
    "wrong delimiter": ("interactions.csv", b"user_id;item_id;rating;event_type;event_timestamp\n"
                                            b"1;2;4.0;rating;1700000000\n"),
    "non-UTF-8 text": ("items.csv", "item_id,title,genres,text\n1,Amélie,Comedy,x\n"
                       .encode("latin-1")),
    "truncated Parquet": ("interactions.parquet", b"PAR1\x15\x04\x15\x80\x01"),
}


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_unreadable_file_is_a_data_error_and_kept(case: str, settings, tmp_path: Path) -> None:
    name, content = UNREADABLE[case]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=name.replace(".", r"\.")) as err:
        gate.submit_files(settings, path)
    assert "quarantine" in str(err.value)
    (meta,) = quarantine.list_batches(settings)
    kept = settings.paths.quarantine / meta["id"] / name
    assert kept.read_bytes() == content
    assert [r["stage"] for r in AuditLog(settings.paths.audit_log).records()] == ["quarantine"]


def test_volume_spike_blocks(settings, lake: Lake, tmp_path: Path) -> None:
    path = tmp_path / "interactions.parquet"
    make_interactions(3000, seed=5).to_parquet(path, index=False)  # 10x the last batch (300)
    v, _, qpath = gate.submit_files(settings, path, source=SOURCE, land=True)
    (vol,) = [c for t in v.tables.values() for c in t.checks if c.check == "volume"]
    assert not vol.success and vol.blocking and vol.observed == 3000
    assert parquet_rows(qpath) == {"interactions": 3000}


def _drifted(tmp_path: Path) -> Path:
    path = tmp_path / "interactions.parquet"
    ratings = np.where(np.arange(300) % 10 == 0, 5.0, 0.5)  # baseline is uniform over 0.5..5
    make_interactions(300, seed=6, ratings=ratings).to_parquet(path, index=False)
    return path


def test_drift_warns_by_default_and_lands(settings, lake: Lake, tmp_path: Path) -> None:
    v, accepted, qpath = gate.submit_files(settings, _drifted(tmp_path), source=SOURCE, land=True)
    assert v.passed and qpath is None and accepted is not None
    drift = [c for c in v.tables["interactions"].checks if c.check == "drift"]
    rating = next(c for c in drift if c.column == schema.RATING)
    assert not rating.success and not rating.blocking and rating.observed > 0.25
    assert any("rating" in w and "psi" in w.lower() for w in accepted.warnings)
    assert len(lake.read(schema.INTERACTIONS)) == 600


def test_drift_blocks_when_configured(home: Path, lake: Lake, tmp_path: Path) -> None:
    strict = load_settings(overrides={"validation.blocking": ["schema", "drift"]})
    v, _, qpath = gate.submit_files(strict, _drifted(tmp_path), source=SOURCE, land=True)
    assert "drift" in _failed_checks(v) and qpath is not None
    assert len(lake.read(schema.INTERACTIONS)) == 300


def test_staged_batch_lands_and_data_docs_list_each_suite(settings) -> None:
    tables = Tables(make_interactions(300), make_items(), make_users(), source=SOURCE)
    staged_id = stage(settings.paths.staging, tables)
    accepted = gate.accept_or_quarantine(settings, staged_id, run_id="r1")

    lake = Lake(settings.paths.lake)
    assert accepted.dataset_version == lake.dataset_version()
    for name, df in tables.as_dict().items():
        assert len(lake.read(name)) == len(df)
        assert accepted.results[name].passed
    records = AuditLog(settings.paths.audit_log).records()
    assert [r["stage"] for r in records] == ["validate"]
    assert records[0]["run_id"] == "r1"
    assert records[0]["outputs"]["dataset_version"] == accepted.dataset_version
    assert verify(AuditLog(settings.paths.audit_log)).ok

    assert _latest_results(accepted.data_docs) == {
        "interactions": "Success", "items": "Success", "users": "Success"}

    # A later failing run of a suite shows as that suite's latest result.
    bad = make_interactions(100, seed=8)
    bad.loc[0, schema.ITEM_ID] = 99_999
    bad_id = stage(settings.paths.staging, Tables(bad, make_items().iloc[:0],
                                                  make_users().iloc[:0], source=SOURCE))
    with pytest.raises(ValidationFailed):
        gate.accept_or_quarantine(settings, bad_id)
    assert _latest_results(accepted.data_docs) == {
        "interactions": "Failed", "items": "Success", "users": "Success"}


def _latest_results(index: Path) -> dict[str, str]:
    """Suite -> status of its newest run, as the Data Docs index page lists them."""
    html = index.read_text()
    rows = re.findall(r"'_expectation_suite_name_sort': '(\w+)', '_table_row_link_path': "
                      r"'([^']+)', '_validation_success_text': '(\w+)'", html)
    latest: dict[str, tuple[str, str]] = {}
    for suite, link, status in rows:
        assert (index.parent / link).is_file()  # the result page it links to exists
        if suite not in latest or link > latest[suite][0]:  # links hold the run time
            latest[suite] = (link, status)
    for suite in latest:
        assert f"expectations/{suite}.html" in html
    return {suite: status for suite, (_, status) in latest.items()}


def test_staged_bad_batch_moves_whole_to_quarantine(settings, lake: Lake) -> None:
    bad = make_interactions(120, seed=4).astype({schema.RATING: str})  # ratings as text
    bad.loc[3, schema.RATING] = "five"
    staged_id = stage_raw(settings.paths.staging,
                          {"interactions": bad, "items": make_items(), "users": make_users()},
                          "rawbad0000000001")
    with pytest.raises(ValidationFailed) as err:
        gate.accept_or_quarantine(settings, staged_id, run_id="r2")
    exc = err.value
    qpath = Path(exc.quarantine_path)
    assert str(qpath) in str(exc) and "interactions.schema" in str(exc)
    assert any("rating" in f for f in exc.failed)
    assert not (settings.paths.staging / staged_id).exists()  # moved, not copied
    assert parquet_rows(qpath) == {"interactions": 120, "items": 60, "users": 40}
    assert (qpath / "manifest.json").exists() and (qpath / quarantine.RESULT).exists()
    stages = [r["stage"] for r in AuditLog(settings.paths.audit_log).records()]
    assert stages == ["validate", "quarantine"]
    assert len(lake.read(schema.INTERACTIONS)) == 300
    with pytest.raises(DataError, match="it was quarantined"):
        gate.accept_or_quarantine(settings, staged_id)


def test_truncated_staged_file_is_quarantined(settings) -> None:
    d = settings.paths.staging / "trunc00000000001"
    stage_raw(settings.paths.staging, {"items": make_items()}, d.name)
    (d / "interactions.parquet").write_bytes(b"PAR1 broken")
    with pytest.raises(DataError, match=r"interactions\.parquet: not a readable Parquet.*"
                                        r"quarantined whole"):
        gate.accept_or_quarantine(settings, d.name)
    kept = settings.paths.quarantine / d.name
    assert (kept / "interactions.parquet").read_bytes() == b"PAR1 broken"
    assert len(pd.read_parquet(kept / "items.parquet")) == 60


def test_release_with_fixed_file(settings, lake: Lake, tmp_path: Path) -> None:
    bad = make_interactions(100, seed=7)
    bad.loc[1, schema.RATING] = 6.0
    path = tmp_path / "interactions.parquet"
    bad.to_parquet(path, index=False)
    _, _, qpath = gate.submit_files(settings, path)
    qid = qpath.name

    with pytest.raises(ValidationFailed):  # unchanged: still fails, stays, attempt recorded
        gate.release(settings, qid)
    assert len(list((qpath / "attempts").iterdir())) == 1

    fixed = tmp_path / "fixed.csv"
    bad.assign(**{schema.RATING: bad[schema.RATING].clip(upper=5.0)}).to_csv(fixed, index=False)
    accepted = gate.release(settings, qid, fixed=fixed)
    assert len(lake.read(schema.INTERACTIONS)) == 400
    assert accepted.dataset_version == lake.dataset_version()
    meta = quarantine.read_meta(settings, qid)
    assert meta["status"] == "released" and meta["released"]["rows"] == {"interactions": 100}
    assert (qpath / "interactions.parquet").read_bytes() == path.read_bytes()  # original kept
    assert AuditLog(settings.paths.audit_log).records()[-1]["stage"] == "release"
    with pytest.raises(DataError, match="already released"):
        gate.release(settings, qid)
    with pytest.raises(DataError, match="no quarantined batch 'nope'"):
        gate.release(settings, "nope")


def _feedback(n: int = 30) -> pd.DataFrame:
    now = pd.Timestamp.now(tz="UTC").floor("s")
    return pd.DataFrame({
        schema.USER_ID: np.arange(1, n + 1), schema.ITEM_ID: np.arange(1, n + 1),
        schema.RATING: np.nan, schema.EVENT_TYPE: "click",
        schema.EVENT_TIMESTAMP: [now - pd.Timedelta(seconds=i) for i in range(n)],
        "received_at": now,
    })


def test_feedback_validation(settings, lake: Lake) -> None:
    ok = gate.validate_feedback(settings, _feedback())
    assert ok.passed and ok.quarantine_path is None

    bad = _feedback()
    bad.loc[0, schema.ITEM_ID] = 99_999
    bad.loc[1, schema.EVENT_TYPE] = "hover"
    res = gate.validate_feedback(settings, bad, run_id="c1")
    assert not res.passed
    assert {c.check for c in res.result.failed} == {"referential", "event_type"}
    assert len(pd.read_parquet(res.quarantine_path / "feedback.parquet")) == len(bad)
    with pytest.raises(DataError, match="feedback events"):
        gate.release(settings, res.quarantine_path.name)


@pytest.mark.slow
def test_movielens_small_passes_the_gate(settings, movielens_small: Path) -> None:
    from recops.data.movielens import read_movielens

    tables = read_movielens(movielens_small, "ml-latest-small")
    accepted = gate.accept_or_quarantine(settings, stage(settings.paths.staging, tables))
    assert all(r.passed for r in accepted.results.values()), accepted.summary()
    lake = Lake(settings.paths.lake)
    assert len(lake.read(schema.INTERACTIONS)) == len(tables.interactions) > 100_000


def test_feedback_with_mixed_types_is_kept_whole(settings, lake: Lake) -> None:
    bad = _feedback(10).assign(**{schema.RATING: 4.0, schema.EVENT_TYPE: "rating"})
    bad[schema.RATING] = bad[schema.RATING].astype(object)
    bad.loc[5, schema.RATING] = "great"  # a string among floats: Parquet cannot hold it
    res = gate.validate_feedback(settings, bad)
    assert not res.passed and "schema" in {c.check for c in res.result.failed}
    kept = pd.read_csv(res.quarantine_path / "feedback.csv")
    assert len(kept) == 10 and kept[schema.RATING].iloc[5] == "great"
