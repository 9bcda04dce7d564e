"""Shared fixtures: an isolated RECOPS_HOME per test, real-service handles, local MovieLens."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Phone-home off for every framework the tests start (the process boundary, like the Makefile).
for _k, _v in {
    "GX_ANALYTICS_ENABLED": "false", "BENTOML_DO_NOT_TRACK": "true", "FEAST_USAGE": "False",
    "RAY_USAGE_STATS_ENABLED": "0", "SCARF_ANALYTICS": "false", "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}.items():
    os.environ.setdefault(_k, _v)

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() == "true"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
            *args: str) -> tuple[int, str, str]:
    """Run `recops <args>` in-process through recops.cli.main (the console script's entry):
    (exit code, stdout, stderr)."""
    import sys

    from recops.cli import main

    monkeypatch.setattr(sys, "argv", ["recops", *args])
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps at the terminal width
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def run_cli_text(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                 *args: str) -> tuple[int, str]:
    """:func:`run_cli` with stdout and stderr as one text."""
    code, out, err = run_cli(monkeypatch, capsys, *args)
    return code, out + err


def require_service(name: str, host: str, port: int) -> None:
    """Skip with a reason when a service is down, except in CI where it must be there."""
    if _reachable(host, port):
        return
    msg = f"{name} is not reachable at {host}:{port} (run scripts/services.sh)"
    if IN_CI:
        pytest.fail(msg + " -- CI=true: services are required, not skipped")
    pytest.skip(msg)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's RECOPS_* settings or writes to their home."""
    for key in list(os.environ):
        if key.startswith("RECOPS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("RECOPS_HOME", str(tmp_path / "home"))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def settings(home: Path):
    from recops.config import load_settings

    return load_settings()


@pytest.fixture(scope="session")
def movielens_small() -> Path:
    root = os.environ.get("RECOPS_DATA__ROOT")
    if not root:
        pytest.skip("RECOPS_DATA__ROOT is not set: point it at a folder holding "
                    "ml-latest-small/ (make test sets it when the machine has a local copy)")
    path = Path(root) / "ml-latest-small"
    if not (path / "ratings.csv").exists():
        pytest.skip(f"MovieLens latest-small not found at {path}")
    return path


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return "127.0.0.1:6379"


@pytest.fixture
def postgres_dsn() -> str:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def fresh_database(postgres_dsn: str) -> Iterator[str]:
    """A database of its own on the shared PostgreSQL (its DSN), dropped afterwards."""
    import psycopg

    name = f"recops_test_{uuid.uuid4().hex[:10]}"
    admin = postgres_dsn.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_dsn.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
