"""`recops validate` and `recops quarantine`: check data with Great Expectations, manage rejects."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from validation.results import AcceptedBatch, BatchValidation, TableResult

out = Console()
status = Console(stderr=True)
TABLE_HELP = "Which table the file holds: interactions, items, users or feedback (else told " \
             "from the file name or its columns)."


def _checks_table(results: dict[str, TableResult], title: str) -> Table:
    t = Table(title=title)
    for col in ("table", "check", "expectation", "column", "blocking", "result", "detail"):
        t.add_column(col, overflow="fold")
    for res in results.values():
        for c in res.checks:
            mark = "[green]pass[/]" if c.success else (
                "[bold red]FAIL[/]" if c.blocking else "[yellow]warn[/]")
            detail = "" if c.success else c.describe().split(" — ", 1)[-1]
            t.add_row(res.table, c.check, c.expectation.removeprefix("expect_"), c.column or "",
                      "yes" if c.blocking else "no", mark, detail)
    return t


def _print_outcome(v: BatchValidation | AcceptedBatch, title: str) -> None:
    results = v.results if hasattr(v, "results") else v.tables
    out.print(_checks_table(results, title))
    for res in results.values():
        for note in res.notes:
            out.print(f"note: {note}", highlight=False, soft_wrap=True)
    if v.data_docs:
        out.print(f"Data Docs: {v.data_docs}", highlight=False, soft_wrap=True)


def validate(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(help="A .csv/.tsv/.parquet/.jsonl file, a folder of "
                                        "<table> files, or a staged batch id (from `recops "
                                        "ingest`).")],
    table: Annotated[str | None, typer.Option("--table", "-t", help=TABLE_HELP)] = None,
    land: Annotated[bool, typer.Option("--land", help="Land the file(s) in the lake when they "
                                       "pass (a staged batch always lands).")] = False,
    quarantine: Annotated[bool, typer.Option(
        "--quarantine/--no-quarantine", help="Copy failing input to quarantine (default on).")
    ] = True,
    source: Annotated[str | None, typer.Option(
        "--source", help="Source name recorded in the lake; volume is compared with the last "
        "batch from the same source (default file:<name>).")] = None,
) -> None:
    """Validate data with the expectation suites; exit 1 when a blocking check fails."""
    from recops.errors import DataError, ValidationFailed
    from validation import gate
    from validation.names import SUITE_TABLES

    settings = ctx.obj.settings()
    if table is not None and table not in SUITE_TABLES:
        raise DataError(f"--table {table!r} is not one of {', '.join(SUITE_TABLES)}")
    p = Path(path)
    if not p.exists():
        if (settings.paths.staging / path / "manifest.json").exists():
            with status.status(f"validating staged batch {path}"):
                try:
                    landed = gate.accept_or_quarantine(settings, path)
                except ValidationFailed as exc:
                    for line in exc.failed:
                        out.print(f"[bold red]FAIL[/] {line}", highlight=False, soft_wrap=True)
                    out.print(f"quarantined: {exc.quarantine_path}", highlight=False,
                              soft_wrap=True)
                    raise SystemExit(1) from None
            _print_outcome(landed, f"staged batch {path}: accepted")
            out.print(f"landed; dataset version [bold]{landed.dataset_version}[/]",
                      highlight=False)
            return
        raise DataError(f"{path}: no such file or folder, and no staged batch with that id "
                        f"under {settings.paths.staging}")
    with status.status(f"validating {p.name}") as spinner:
        v, accepted, qpath = gate.submit_files(
            settings, p, table=table, land=land, quarantine_failed=quarantine, source=source,
            progress=lambda t: spinner.update(f"validating {p.name}: {t}"))
    _print_outcome(v, f"{p.name}: {'passed' if v.passed else 'FAILED'}")
    if not v.passed:
        for line in v.failed:
            out.print(f"[bold red]FAIL[/] {line}", highlight=False, soft_wrap=True)
        if qpath:
            out.print(f"quarantined: {qpath}", highlight=False, soft_wrap=True)
        raise SystemExit(1)  # typer.Exit's code is lost under main()'s standalone_mode=False
    if accepted is not None:
        out.print(f"landed; dataset version [bold]{accepted.dataset_version}[/]", highlight=False)


quarantine_app = typer.Typer(help="Inspect, and resubmit once fixed, batches that failed "
                             "validation.", no_args_is_help=True)


@quarantine_app.command("list")
def q_list(ctx: typer.Context) -> None:
    """List quarantined batches, oldest first."""
    from validation import quarantine as q

    settings = ctx.obj.settings()
    t = Table(title=f"quarantine ({settings.paths.quarantine})")
    for col in ("id", "kind", "status", "quarantined at", "rows", "first failure"):
        t.add_column(col, overflow="fold")
    for m in q.list_batches(settings):
        rows = ", ".join(f"{k}={v}" for k, v in m["rows"].items() if v)
        t.add_row(m["id"], m["kind"], m["status"], m["created_at"][:19], rows,
                  (m["failed"] or [""])[0][:100])
    out.print(t)


@quarantine_app.command("show")
def q_show(ctx: typer.Context, batch_id: Annotated[str, typer.Argument(help="Quarantine id.")],
           ) -> None:
    """Show why a batch was quarantined, its files and row counts."""
    from validation import quarantine as q

    settings = ctx.obj.settings()
    d = q.path_of(settings, batch_id)
    m = q.read_meta(settings, batch_id)
    t = Table(title=f"quarantined batch {batch_id}", show_header=False)
    for key in ("kind", "status", "source", "origin", "created_at", "run_id"):
        t.add_row(key, str(m.get(key)))
    for table, name in m["tables"].items():
        t.add_row(f"file ({table})", f"{d / name}  rows={m['rows'].get(table)}")
    if m.get("released"):
        t.add_row("released", str(m["released"]))
    out.print(t)
    out.print((d / q.REASON).read_text(), highlight=False, soft_wrap=True)


@quarantine_app.command("release")
def q_release(
    ctx: typer.Context,
    batch_id: Annotated[str, typer.Argument(help="Quarantine id.")],
    file: Annotated[Path | None, typer.Option("--file", "-f", help="A fixed file replacing one "
                                              "table of the batch.", dir_okay=False)] = None,
    table: Annotated[str | None, typer.Option("--table", "-t", help=TABLE_HELP)] = None,
) -> None:
    """Re-validate a quarantined batch (optionally with a fixed file); land it if it passes."""
    from recops.errors import ValidationFailed
    from validation import gate

    settings = ctx.obj.settings()
    with status.status(f"re-validating {batch_id}"):
        try:
            accepted = gate.release(settings, batch_id, fixed=file, table=table)
        except ValidationFailed as exc:
            for line in exc.failed:
                out.print(f"[bold red]FAIL[/] {line}", highlight=False, soft_wrap=True)
            out.print(f"still quarantined: {exc.quarantine_path}", highlight=False)
            raise SystemExit(1) from None
    _print_outcome(accepted, f"{batch_id}: released")
    out.print(f"landed; dataset version [bold]{accepted.dataset_version}[/]", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this area's commands to `app`."""
    app.command("validate")(validate)
    app.add_typer(quarantine_app, name="quarantine")
