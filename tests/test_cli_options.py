"""Command-line options generated from settings fields: one per field, help and choices from the
declaration, values checked by the settings."""

from __future__ import annotations

from typing import Any, Literal

import pytest
import typer
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from recops.cli.options import section_options, with_setting_options


class Toy(BaseModel):
    colour: Literal["red", "blue"] = Field("red", description="Which colour.")
    size: int = Field(3, ge=1, description="How big.")
    loud: bool = Field(False, description="Shout.")


def _app(seen: list[dict[str, Any]]) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @with_setting_options(section_options("toy", Toy, aliases={"size": ("-s",)}))
    def main(overrides: dict[str, Any], name: str = "x") -> None:
        seen.append({"name": name, **overrides})

    return app


def test_every_field_is_an_option_whose_value_reaches_the_command() -> None:
    seen: list[dict[str, Any]] = []
    result = CliRunner().invoke(_app(seen), ["--colour", "blue", "-s", "5", "--loud",
                                             "--name", "y"])
    assert result.exit_code == 0, result.output
    assert seen == [{"name": "y", "toy.colour": "blue", "toy.size": "5", "toy.loud": True}]
    CliRunner().invoke(_app(seen), [])
    assert seen[-1] == {"name": "x", "toy.colour": None, "toy.size": None, "toy.loud": None}


def test_help_comes_from_the_field() -> None:
    result = CliRunner().invoke(_app([]), ["--help"], env={"COLUMNS": "200"})
    assert "Which colour. (toy.colour, default 'red')" in result.output
    assert "[red|blue]" in result.output and "--no-loud" in result.output


def test_a_field_with_no_command_line_form_is_refused_when_declared() -> None:
    class Odd(BaseModel):
        tags: list[str] = []

    with pytest.raises(TypeError, match="odd.tags"):
        section_options("odd", Odd)


def test_recops_federated_has_a_flag_for_every_federated_setting() -> None:
    from recops.cli import app
    from recops.config import FederatedSettings

    result = CliRunner().invoke(app, ["federated", "--help"], env={"COLUMNS": "300"})
    for name in FederatedSettings.model_fields:
        assert f"--{name.replace('_', '-')}" in result.output, name
        assert f"(federated.{name}, default" in result.output, name
