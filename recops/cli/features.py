"""`recops features build|apply|materialize|show`: the Feast feature store from the command line."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from recops.config import Settings

out = Console()
features_app = typer.Typer(help="Feature store (Feast): build sources, apply, materialise, read.",
                           no_args_is_help=True)

Online = Annotated[str | None, typer.Option("--online", help="Online store: sqlite or redis "
                                            "(stores.online).")]
Project = Annotated[str | None, typer.Option("--project", help="Feast project "
                                             "(stores.feast_project).")]


def _settings(ctx: typer.Context, online: str | None, project: str | None,
              **extra: object) -> Settings:
    settings: Settings = ctx.obj.settings(**{"stores.online": online,
                                             "stores.feast_project": project, **extra})
    return settings


@features_app.command("build")
def build(
    ctx: typer.Context,
    max_len: Annotated[int | None, typer.Option("--max-len", help="Sequence length "
                                                "(model.max_len).")] = None,
    text: Annotated[bool, typer.Option("--text/--no-text", help="Compute item text embeddings "
                                       "(needs the sentence encoder).")] = True,
) -> None:
    """Compute the feature tables from the lake and write the Parquet sources Feast reads."""
    from recops.core.lake import Lake
    from recops.features.featurize import build_sources

    settings = ctx.obj.settings(**{"model.max_len": max_len})
    with out.status("computing features from the lake"):
        manifest = build_sources(settings, Lake(settings.paths.lake), text_vectors=text)
    table = Table(title=f"feature sources (dataset {manifest['dataset_version']})")
    table.add_column("source")
    table.add_column("rows", justify="right")
    table.add_column("path")
    for name, s in manifest["sources"].items():
        table.add_row(name, f"{s['rows']:,}", s["path"])
    out.print(table)
    out.print(f"events {manifest['min_event_timestamp']} .. {manifest['max_event_timestamp']}; "
              f"max_len {manifest['max_len']}; text embedding: {manifest['text_embedding']}")


@features_app.command("apply")
def apply_cmd(ctx: typer.Context, online: Online = None, project: Project = None,
              run_id: Annotated[str | None, typer.Option("--run-id")] = None) -> None:
    """Register entities, views and feature services (runs the real `feast apply`)."""
    from recops.features.feast_store import apply

    settings = _settings(ctx, online, project)
    with out.status(f"feast apply (project {settings.stores.feast_project})"):
        result = apply(settings, run_id=run_id)
    for line in result["output"]:
        if line.strip():
            out.print(line, highlight=False)
    out.print(f"applied {result['yaml']} to project {result['project']} in {result['seconds']} s")


@features_app.command("materialize")
def materialize_cmd(
    ctx: typer.Context,
    online: Online = None,
    project: Project = None,
    end: Annotated[datetime | None, typer.Option("--end", help="Materialise up to this UTC time "
                                                 "(default now).")] = None,
    full: Annotated[bool, typer.Option("--full", help="Ignore the watermarks: reload every "
                                       "view from the oldest event.")] = False,
    run_id: Annotated[str | None, typer.Option("--run-id")] = None,
) -> None:
    """Load new feature rows into the online store, from each view's watermark (idempotent)."""
    from recops.features.feast_store import materialize

    settings = _settings(ctx, online, project)
    with out.status("materialising"):
        result = materialize(settings, end, full=full, run_id=run_id)
    table = Table(title=f"materialised to {result['end']} ({result['seconds']} s)")
    for col in ("view", "action", "from", "to (watermark)"):
        table.add_column(col)
    for name, v in result["views"].items():
        table.add_row(name, v["action"], v["from"], v["to"])
    out.print(table)


@features_app.command("show")
def show(
    ctx: typer.Context,
    user_id: Annotated[int, typer.Argument(help="The user whose online features to show.")],
    online: Online = None,
    project: Project = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")
                       ] = False,
) -> None:
    """Print a user's features as the online store holds them (what serving reads)."""
    import pandas as pd

    from recops.features.feast_online import online_features

    settings = _settings(ctx, online, project)
    row = online_features(settings, [user_id]).iloc[0]
    if not row["found"]:
        out.print(f"user {user_id} has no features in the online store of project "
                  f"{settings.stores.feast_project} (unknown user, or not materialised yet)")
        raise typer.Exit(1)
    if as_json:
        values = {k: (None if not isinstance(v, list) and pd.isna(v) else v)
                  for k, v in row.drop("found").items()}
        typer.echo(json.dumps(values, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
        return
    table = Table(title=f"user {user_id} (online, project {settings.stores.feast_project})")
    table.add_column("feature")
    table.add_column("value", overflow="fold")
    for name, value in row.items():
        if name != "found":
            table.add_row(str(name), str(value))
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add this area's commands to `app`."""
    app.add_typer(features_app, name="features")
