"""The `recops` shell: every command has help, user mistakes are one line and exit 2."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
import typer
from typer.testing import CliRunner

from recops.cli import app


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in group.commands.items():
        path = (*prefix, name)
        out.append(path)
        if isinstance(cmd, click.Group):
            out.extend(_commands(cmd, path))
    return out


COMMANDS = _commands(typer.main.get_command(app))


def test_the_documented_commands_exist() -> None:
    top = {c[0] for c in COMMANDS}
    for name in ("ingest", "validate", "features", "train", "evaluate", "package", "serve",
                 "report", "pipeline", "run", "quarantine", "models", "federated", "audit"):
        assert name in top, f"`recops {name}` is missing"


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def _recops(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recops.cli", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_a_bad_setting_is_one_line_naming_it_and_exit_2(tmp_path, monkeypatch) -> None:
    import os

    env = {**os.environ, "RECOPS_TRAIN__EPOCHS": "many", "RECOPS_HOME": str(tmp_path)}
    out = _recops("models", "list", env=env)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "train.epochs" in out.stderr and "RECOPS_TRAIN__EPOCHS" in out.stderr


def test_a_missing_config_file_is_a_clear_error(tmp_path) -> None:
    out = _recops("--config", str(tmp_path / "nope.yaml"), "models", "list")
    assert out.returncode == 2
    assert "nope.yaml" in out.stderr and "Traceback" not in out.stderr


def test_an_unknown_command_or_flag_is_a_usage_error() -> None:
    assert _recops("frobnicate").returncode == 2
    out = _recops("ingest", "--no-such-flag")
    assert out.returncode == 2 and "no-such-flag" in out.stderr


def test_a_command_exit_code_survives_the_entry_point(monkeypatch) -> None:
    # main() runs Typer in non-standalone mode, which returns typer.Exit codes rather than
    # exiting with them; the entry point must still exit non-zero.
    import recops.cli as cli

    @cli.app.command("exit-three", hidden=True)
    def _exit_three() -> None:
        raise typer.Exit(3)

    monkeypatch.setattr(sys, "argv", ["recops", "exit-three"])
    try:
        with pytest.raises(SystemExit) as exc:
            cli.main()
        assert exc.value.code == 3
    finally:
        cli.app.registered_commands = [c for c in cli.app.registered_commands
                                       if c.name != "exit-three"]
