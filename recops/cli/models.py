"""`recops models list|show|promote|rollback` and `recops gate TAG`: the registry and its gate."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

out = Console()
MODEL = "recops-recommender"
models_app = typer.Typer(help="Model registry (BentoML store): list, show, promote, roll back.",
                         no_args_is_help=True)

Tag = Annotated[str, typer.Argument(help="Model tag: recops-recommender:<version>, the version "
                                    "alone, 'latest' or 'champion'.")]


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))


@models_app.command("list")
def list_cmd(ctx: typer.Context) -> None:
    """Registered models, newest first; the champion is starred."""
    from recops.release.registry import list_models

    settings = ctx.obj.settings()
    rows = list_models(settings)
    table = Table(title=f"{MODEL} versions in {settings.paths.bentoml_home}")
    for col in ("", "version", "created", "kind", "mode", "run", "ndcg@10", "hr@10", "epsilon"):
        table.add_column(col, justify="right" if col in ("ndcg@10", "hr@10", "epsilon") else "left",
                         no_wrap=col in ("version", "created"))
    for m in rows:
        metrics = m.metadata.get("metrics") or {}
        eps = (m.metadata.get("privacy") or {}).get("epsilon")
        table.add_row("*" if m.champion else "", m.tag.split(":")[1],
                      m.created_at[:16].replace("T", " "), m.labels.get("kind", ""),
                      m.labels.get("training_mode", ""), m.labels.get("run_id", ""),
                      _fmt(metrics.get("ndcg@10")), _fmt(metrics.get("hr@10")), _fmt(eps))
    out.print(table)
    if not rows:
        out.print("no models registered yet: train one with `recops train`")


@models_app.command("show")
def show_cmd(ctx: typer.Context, tag: Tag) -> None:
    """Everything recorded about one model: metrics per segment, privacy, data and code versions."""
    from recops.release import registry

    settings = ctx.obj.settings()
    full = registry.resolve(settings, tag)
    meta = registry.metadata(settings, full)
    champ = registry.champion_tag(settings)
    table = Table(title=f"{full}{'  (champion)' if full == champ else ''}", show_header=False)
    table.add_column("field")
    table.add_column("value")
    for key in ("run_id", "training_mode", "data_version", "feature_service", "code_version",
                "registered_at"):
        table.add_row(key, _fmt(meta.get(key)))
    for name, value in (meta.get("metrics") or {}).items():
        table.add_row(f"metric {name}", _fmt(value))
    for seg, vals in (meta.get("per_segment") or {}).items():
        table.add_row(f"segment {seg}", ", ".join(f"{k}={_fmt(v)}" for k, v in vals.items()))
    for key in ("privacy", "privacy_total", "validation", "federated"):
        if meta.get(key) is not None:
            table.add_row(key, json.dumps(meta[key], default=str))
    out.print(table)


@models_app.command("promote")
def promote_cmd(ctx: typer.Context, tag: Tag,
                force: Annotated[bool, typer.Option("--force", help="Skip the gate (recorded as "
                                                    "a manual promotion).")] = False) -> None:
    """Make a model the champion: through the gate, unless --force."""
    from recops.errors import GateRejected
    from recops.release import registry
    from recops.release.gate import run_gate

    settings = ctx.obj.settings()
    if force:
        full = registry.promote(settings, tag, reason="manual --force")
        out.print(f"champion is now {full} (gate skipped)")
        return
    decision = run_gate(settings, tag)
    _print_decision(registry.resolve(settings, tag), decision)
    if not decision.promote:
        raise GateRejected(f"{tag} was not promoted: " + "; ".join(decision.reasons))


@models_app.command("rollback")
def rollback_cmd(ctx: typer.Context) -> None:
    """Restore the previous champion."""
    from recops.release.registry import rollback

    out.print(f"champion is now {rollback(ctx.obj.settings())}")


def _print_decision(tag: str, decision: Any) -> None:
    table = Table(title=f"gate for {tag}: {'PROMOTE' if decision.promote else 'REJECT'}")
    table.add_column("check")
    table.add_column("passed")
    table.add_column("reason")
    for name, check in decision.checks.items():
        table.add_row(name, "yes" if check["passed"] else "[red]no[/]", check["reason"])
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add this area's commands to `app`."""
    app.add_typer(models_app, name="models")

    @app.command("gate")
    def gate_cmd(
        ctx: typer.Context,
        tag: Tag,
        promote: Annotated[bool, typer.Option("--promote/--dry-run", help="Promote when it "
                                              "passes (default) or only report.")] = True,
    ) -> None:
        """Check a model against the champion (validation, NDCG@10, privacy, segments)."""
        from recops.errors import GateRejected
        from recops.release import registry
        from recops.release.gate import run_gate

        settings = ctx.obj.settings()
        decision = run_gate(settings, tag, promote=promote)
        _print_decision(registry.resolve(settings, tag), decision)
        if not decision.promote:
            raise GateRejected(f"{tag} did not pass the gate: " + "; ".join(decision.reasons))
