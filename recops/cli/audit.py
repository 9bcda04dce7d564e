"""`recops audit verify|show`, `recops report MODEL`, `recops subject show|erase|export USER`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from recops.config import Settings

out = Console()
audit_app = typer.Typer(help="The hash-chained audit log: verify it, show records.",
                        no_args_is_help=True)
subject_app = typer.Typer(help="Data-subject requests: what recops holds about a user; erasure.",
                          no_args_is_help=True)

UserId = Annotated[str, typer.Argument(help="The user's id (the lake's user_id).")]


def _short(obj: Any, n: int = 60) -> str:
    text = json.dumps(obj, sort_keys=True, default=str) if obj else ""
    return text if len(text) <= n else text[: n - 1] + "…"


def _dsn(settings: Settings) -> str:
    from recops.errors import ConfigError

    if settings.stores.postgres_dsn is None:
        raise ConfigError("the PostgreSQL audit mirror needs setting 'stores.postgres_dsn' "
                          "[env RECOPS_STORES__POSTGRES_DSN]")
    return settings.stores.postgres_dsn.get_secret_value()


Postgres = Annotated[bool, typer.Option("--postgres", help="Also hold the log against its "
                                        "PostgreSQL mirror (stores.postgres_dsn).")]
MirrorTable = Annotated[str, typer.Option("--table", help="Mirror table name.")]


@audit_app.command("verify")
def verify_cmd(ctx: typer.Context, postgres: Postgres = False,
               table: MirrorTable = "recops_audit") -> None:
    """Walk the chain: exit 0 when intact, 1 naming the first edited/removed/reordered record."""
    from recops.core.audit import AuditLog, verify, verify_against_postgres

    settings = ctx.obj.settings()
    log = AuditLog(settings.paths.audit_log)
    status = (verify_against_postgres(log, _dsn(settings), table) if postgres else verify(log))
    if status.ok:
        out.print(f"[green]audit chain intact[/]: {status.records} record(s) in {log.path}"
                  + (f", last hash {status.last_hash}" if status.last_hash else ""),
                  highlight=False, soft_wrap=True)
        return
    from rich.markup import escape

    out.print(f"[bold red]audit chain broken[/] at seq {status.bad_seq}: "
              f"{escape(str(status.problem))}", highlight=False, soft_wrap=True)
    raise SystemExit(1)  # typer.Exit's code is lost under main()'s standalone_mode=False


@audit_app.command("mirror")
def mirror_cmd(ctx: typer.Context, table: MirrorTable = "recops_audit") -> None:
    """Copy new records to the PostgreSQL mirror (refused if the chain or mirror disagree)."""
    from recops.core.audit import AuditLog, mirror_to_postgres

    settings = ctx.obj.settings()
    added = mirror_to_postgres(AuditLog(settings.paths.audit_log), _dsn(settings), table)
    out.print(f"mirrored {added} new record(s) to PostgreSQL table {table}")


@audit_app.command("show")
def show_cmd(
    ctx: typer.Context,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Only this run's records.")] = None,
    stage: Annotated[str | None, typer.Option("--stage", help="Only this stage (e.g. train).")]
    = None,
    last: Annotated[int, typer.Option("--last", min=1, help="At most this many, newest last.")]
    = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the records as JSON lines.")]
    = False,
) -> None:
    """The audit records, filtered, as a table (or JSON)."""
    from recops.core.audit import AuditLog

    settings = ctx.obj.settings()
    records = AuditLog(settings.paths.audit_log).records()
    rows = [r for r in records if (run_id is None or r.get("run_id") == run_id)
            and (stage is None or r.get("stage") == stage)][-last:]
    if as_json:
        for r in rows:
            print(json.dumps(r, sort_keys=True, default=str))
        return
    table = Table(title=f"audit log {settings.paths.audit_log} ({len(records)} records)")
    for col in ("seq", "time", "stage", "run", "result", "inputs", "outputs", "hash"):
        table.add_column(col, overflow="fold", no_wrap=col in ("seq", "time", "hash"))
    for r in rows:
        table.add_row(str(r.get("seq")), str(r.get("time", ""))[:19], str(r.get("stage")),
                      str(r.get("run_id") or ""), str(r.get("result")), _short(r.get("inputs")),
                      _short(r.get("outputs")), str(r.get("hash", ""))[:12])
    out.print(table)
    if not rows:
        out.print("no matching records")


def report_cmd(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model tag (recops-recommender:<version>, the "
                                         "version, 'latest') or 'champion'.")] = "champion",
    run_id: Annotated[str | None, typer.Option("--run-id", help="Report the model this run "
                                               "registered instead of MODEL.")] = None,
    output: Annotated[Path | None, typer.Option(
        "--out", "-o", dir_okay=False, help="Where to write the HTML (default: <home>/reports/).")
    ] = None,
    pdf: Annotated[bool, typer.Option("--pdf", help="Also print it to PDF (needs Chromium).")]
    = False,
) -> None:
    """Build the compliance report of a model as a self-contained HTML page."""
    from recops.compliance.report import build_report

    settings = ctx.obj.settings()
    with out.status("gathering records and drawing figures"):
        path = build_report(settings, None if run_id else model, run_id=run_id, out=output,
                            pdf=pdf)
    out.print(f"report written to {path}", highlight=False, soft_wrap=True)
    if pdf:
        out.print(f"PDF written to {path.with_suffix('.pdf')}", highlight=False, soft_wrap=True)


@subject_app.command("show")
def subject_show_cmd(
    ctx: typer.Context, user_id: UserId,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full view as JSON.")] = False,
) -> None:
    """Which datasets, runs, model versions and privacy spends involved USER_ID (access request)."""
    from recops.compliance.subjects import parse_user_id, show

    uid = parse_user_id(user_id)
    settings = ctx.obj.settings()
    view = show(settings, uid)
    if as_json:
        print(json.dumps(view.to_dict(), indent=2, sort_keys=True, default=str))
        return
    out.print(f"user {uid} (subject {view.subject}): {view.events} event(s) in the lake, "
              f"{view.feedback_events} in the feedback log, {view.impressions} list(s) in the "
              f"impression log, {len(view.erasures)} erasure(s)",
              highlight=False)
    sections = (
        ("lake batches", ("table", "batch_id", "rows", "source", "created_at"), view.batches),
        ("runs", ("run_id", "dataset_version", "mode", "in_labels"), view.runs),
        ("model versions", ("tag", "run_id", "data_version", "champion", "retrain_required"),
         view.models),
        ("privacy spends", ("run_id", "mechanism", "unit", "epsilon", "delta", "time"),
         view.privacy_spends),
        ("other copies", ("where", "path", "rows"), view.copies),
    )
    for title, cols, rows in sections:
        table = Table(title=f"{title} ({len(rows)})")
        for c in cols:
            table.add_column(c, overflow="fold")
        for r in rows:
            table.add_row(*["" if r.get(c) is None else str(r.get(c)) for c in cols])
        out.print(table)


@subject_app.command("erase")
def subject_erase_cmd(
    ctx: typer.Context, user_id: UserId,
    reason: Annotated[str, typer.Option("--reason", help="Recorded in the audit log.")] =
    "data subject erasure request",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove USER_ID's rows everywhere recops holds them (lake, files, logs, online store)."""
    from recops.compliance.subjects import erase, parse_user_id

    uid = parse_user_id(user_id)
    settings = ctx.obj.settings()
    if not yes:
        typer.confirm(f"Erase every row of user {uid} under {settings.paths.home} and from its "
                      "feedback and impression logs and online store?", abort=True)
    with out.status("rewriting lake batches, files, logs and the online store"):
        res = erase(settings, uid, reason=reason)
    table = Table(title=f"erasure {res.erasure_id}: {res.rows_removed} row(s) removed")
    for c in ("table", "superseded batch", "new batch", "rows removed"):
        table.add_column(c)
    for s in res.superseded:
        table.add_row(s["table"], s["old"], s["new"] or "(removed)", str(s["rows_removed"]))
    out.print(table)
    places = Table(title=f"other places rewritten ({len(res.places)})")
    for c in ("where", "path", "rows"):
        places.add_column(c, overflow="fold")
    for p in res.places:
        places.add_row(p["where"], p["path"], str(p["rows"]))
    out.print(places)
    out.print(f"new dataset version: {res.dataset_version}; models marked for retraining: "
              f"{', '.join(res.models_marked) or 'none'}; runs marked: "
              f"{', '.join(res.runs_marked) or 'none'}", highlight=False, soft_wrap=True)
    for r in res.remaining:
        out.print(f"[yellow]not rewritten:[/] {r['where']} ({r['what']})",
                  highlight=False, soft_wrap=True)
    if not res.superseded and not res.places:
        out.print(f"user {uid} was erased before and has no rows left: nothing erased "
                  "(recorded)")


@subject_app.command("export")
def subject_export_cmd(
    ctx: typer.Context, user_id: UserId,
    output: Annotated[Path, typer.Option("--out", "-o", dir_okay=True, help="The JSON file to "
                                         "write (it names the user: keep it out of the home).")],
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
) -> None:
    """Write everything held about USER_ID (rows, features, logs, models) to one JSON file."""
    from recops.compliance.export import check_out, export
    from recops.compliance.subjects import parse_user_id

    uid = parse_user_id(user_id)
    check_out(output, force=force)  # before the (slow) gathering
    settings = ctx.obj.settings()
    with out.status("gathering what is held about the user"):
        summary = export(settings, uid, output, force=force)
    out.print(f"wrote {summary['path']}: {summary['lake_rows']} lake row(s), "
              f"{summary['places']} other place(s), {summary['online_rows']} online row(s), "
              f"{summary['runs']} run(s), {summary['models']} model(s)",
              highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add this area's commands to `app`."""
    app.add_typer(audit_app, name="audit")
    app.add_typer(subject_app, name="subject")
    app.command("report")(report_cmd)
