"""`recops ingest` and `recops datasets`: load a source, stage it for validation, list sources."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from recops.cli.sources import (
    Columns,
    Events,
    ItemAttributes,
    Items,
    TimestampUnit,
    Users,
    parse_column_map,
    source_overrides,
)

if TYPE_CHECKING:
    from rich.progress import Progress

out = Console()


def _loading(name: str) -> tuple[Progress, Callable[[int, int | None], None]]:
    """One live display: a spinner while loading, with byte counts once a download starts."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                   TextColumn("{task.fields[size]}"), console=Console(stderr=True),
                   transient=True)
    task = bar.add_task(f"loading {name}", size="")

    def update(done: int, total: int | None) -> None:
        size = f"{done / 1e6:.1f}" + (f" / {total / 1e6:.1f} MB" if total else " MB")
        bar.update(task, description=f"downloading {name}", size=size)

    return bar, update


def ingest(
    ctx: typer.Context,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", "-d", help="ml-latest-small, ml-100k, ml-1m, ml-25m or synthetic "
        "(else data.dataset; --events/--items read a team's own files).")] = None,
    data_root: Annotated[Path | None, typer.Option(
        "--data-root", help="Folder holding the MovieLens folder, or the folder itself "
        "(else RECOPS_DATA__ROOT).")] = None,
    download: Annotated[bool | None, typer.Option(
        "--download/--no-download", help="Fetch from GroupLens when absent (default: on).")
    ] = None,
    file: Annotated[str | None, typer.Option(
        "--file", "-f", help="An incremental batch of interactions (.csv, .tsv, .parquet or "
        ".jsonl; a path or an fsspec URL such as file:///...; or a PostgreSQL table or query, "
        "postgresql://user@host:5432/db?table=events) to stage with the lake's latest items "
        "and users, instead of a whole dataset.")] = None,
    events: Events = None, items: Items = None, users: Users = None,
    column_map: Columns = None, item_attributes: ItemAttributes = None,
    timestamp_unit: TimestampUnit = None,
) -> None:
    """Load a dataset, a team's files (a first or an incremental batch: new items and users
    join the catalogue) or a file of new events; stage it for validation; print what was
    staged."""
    from recops.core.audit import AuditLog
    from recops.core.lake import Lake
    from recops.data import movielens_fetch
    from recops.data.loaders import load_dataset, source_name, stage_incremental
    from recops.data.tables import stage
    from recops.data.team_stage import stage_files

    team = events is not None or items is not None or users is not None
    if file is not None and team:
        from recops.errors import ConfigError

        raise ConfigError("--file (a batch of interactions with integer ids) and --events/"
                          "--items/--users (a team's files) are two ways in: give one")
    sources = source_overrides(events, items, users, None if file else column_map,
                               item_attributes, timestamp_unit)
    settings = ctx.obj.settings(**{"data.dataset": dataset, "data.root": data_root,
                                   "data.download": download}, **sources)
    status = Console(stderr=True)
    if file is not None:
        from recops.data.postgres import redact

        what = where = redact(file)  # a password in a PostgreSQL URL is never shown or recorded
        with status.status(f"reading and staging {what}"):
            # One chunk in memory at a time, whatever the source's size.
            staged_id, rows = stage_incremental(file, Lake(settings.paths.lake),
                                                settings.paths.staging,
                                                rename=parse_column_map(column_map or [], "--map"))
        source, set_aside = source_name(file), 0
    elif settings.data.dataset == "files":
        with status.status("reading and staging the team's files"):
            # The events file one chunk in memory at a time, whatever its size.
            staged = stage_files(settings, Lake(settings.paths.lake))
        what, where = "files", "the team's files"
        staged_id, rows, source, set_aside = (staged.staged_id, staged.rows, staged.source,
                                              staged.set_aside)
    else:
        bar, update = _loading(settings.data.dataset)
        with bar:
            tables = load_dataset(settings, progress=update)
        what = settings.data.dataset
        where = "generated"
        if what in movielens_fetch.FORMATS:
            where = str(movielens_fetch.find_local(what, settings.data.root,
                                                   settings.paths.datasets))
        with status.status("staging"):
            staged_id = stage(settings.paths.staging, tables)
        rows = {name: len(df) for name, df in tables.as_dict().items()}
        source = tables.source
        set_aside = 0 if tables.quarantined is None else len(tables.quarantined)
    AuditLog(settings.paths.audit_log).append(
        "ingest", inputs={"dataset": what, "source": source, "from": where},
        outputs={"staged_id": staged_id}, config=settings.public_dict(), details={"rows": rows})

    table = Table(title=f"staged {what}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, n in rows.items():
        table.add_row(name, f"{n:,}")
    out.print(table)
    out.print(f"staged id: [bold]{staged_id}[/]", highlight=False)
    out.print(f"path: {settings.paths.staging / staged_id}", highlight=False, soft_wrap=True)
    out.print(f"source: {source} ({where})", highlight=False, soft_wrap=True)
    if set_aside:
        from recops.data.tables import QUARANTINE_DIR

        qpath = settings.paths.staging / staged_id / QUARANTINE_DIR / "interactions.csv"
        out.print(f"set aside: {set_aside:,} event row(s) whose item is in no "
                  f"catalogue, with their reasons: {qpath}", highlight=False, soft_wrap=True)
    out.print(f"next: recops validate {staged_id}   (checks it and lands it in the lake)",
              highlight=False)


def datasets(
    ctx: typer.Context,
    data_root: Annotated[Path | None, typer.Option(
        "--data-root", help="Also look here (else RECOPS_DATA__ROOT).")] = None,
) -> None:
    """List the supported datasets and whether each is available locally."""
    from recops.data.loaders import dataset_status

    settings = ctx.obj.settings(**{"data.root": data_root})
    table = Table(title="datasets")
    for col in ("dataset", "local", "path", "note"):
        table.add_column(col)
    for s in dataset_status(settings):
        table.add_row(s.name, "yes" if s.present else "no", s.path, s.note)
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add this area's commands to `app`."""
    app.command("ingest")(ingest)
    app.command("datasets")(datasets)
