"""The ``recops`` command: a thin Typer shell over the core; each area registers its commands.

User mistakes (:class:`RecopsError`) print one line and exit 2; no traceback.
Commands import heavy modules inside their bodies so ``recops --help`` stays fast.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from recops.errors import RecopsError

if TYPE_CHECKING:  # imported lazily at run time: `recops --help` stays fast
    from recops.config import Settings

console = Console(stderr=True)
app = typer.Typer(
    name="recops",
    help="MLOps for real-time personalised recommendation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# One module per area; each defines register(app). Owned by the area's maintainers.
AREAS = ("data", "validate", "features", "train", "models", "federated", "serve", "audit",
         "pipeline", "platform", "replay", "policy")


class State:
    """Global flags, turned into Settings on first use (after each command adds its flags)."""

    def __init__(self, config: Path | None, home: Path | None) -> None:
        self.config = config
        self.home = home

    def settings(self, **overrides: Any) -> Settings:
        from recops.config import load_settings

        if self.home is not None:
            overrides.setdefault("home", self.home)
        return load_settings(self.config, overrides)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings file "
                      "(else RECOPS_CONFIG).", dir_okay=False)] = None,
    home: Annotated[Path | None, typer.Option("--home", help="Where all state lives "
                    "(else RECOPS_HOME, default ./.recops).")] = None,
) -> None:
    ctx.obj = State(config, home)


for _area in AREAS:
    importlib.import_module(f"recops.cli.{_area}").register(app)


def main() -> None:
    try:
        # Non-standalone mode returns a command's typer.Exit code instead of exiting with it.
        rc = app(standalone_mode=False)
    except RecopsError as exc:
        from rich.markup import escape  # messages hold "[env RECOPS_...]": not markup

        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
    except typer.Abort:
        console.print("aborted")
        raise SystemExit(130) from None
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors come through here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            raise SystemExit(exc.exit_code) from None
        raise
    if isinstance(rc, int) and rc:
        raise SystemExit(rc)


if __name__ == "__main__":
    main()
