"""`recops run` (the main job, through Airflow), `recops pipeline` (same stages, no Airflow),
`recops retrain` (one continual-learning cycle)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
    source_conf,
    source_overrides,
)

out = Console()
err = Console(stderr=True)

Dataset = Annotated[str | None, typer.Option(
    "--dataset", "-d", help="ml-latest-small, ml-100k, ml-1m, ml-25m, synthetic, or files "
    "(a team's own: --events, --items) (else data.dataset).")]
Mode = Annotated[str | None, typer.Option(
    "--mode", "-m", help="centralised or federated (else train.mode).")]
DP = Annotated[bool | None, typer.Option(
    "--dp/--no-dp", help="Train with differential privacy (else privacy.enabled).")]
Epochs = Annotated[int | None, typer.Option("--epochs", "-e", min=1,
                                            help="Training epochs (else train.epochs, or "
                                            "privacy.dp_epochs with DP).")]
Budget = Annotated[float | None, typer.Option(
    "--budget", help="Total privacy budget epsilon over all runs (else privacy.budget_epsilon).")]


def _overrides(dataset: str | None, mode: str | None, dp: bool | None, epochs: int | None,
               budget: float | None) -> dict[str, Any]:
    return {"data.dataset": dataset, "train.mode": mode, "privacy.enabled": dp,
            "train.epochs": epochs, "privacy.dp_epochs": epochs, "privacy.budget_epsilon": budget}


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def print_metrics(summary: dict[str, Any], title: str) -> None:
    """Overall and per-segment metrics of a run as one table."""
    from recops.schema import METRIC_KEYS

    table = Table(title=title)
    table.add_column("users")
    for k in METRIC_KEYS:
        table.add_column(k, justify="right")
    table.add_row("all", *[_fmt(summary["metrics"].get(k)) for k in METRIC_KEYS])
    for seg, m in sorted(summary.get("per_segment", {}).items()):
        table.add_row(seg, *[_fmt(m.get(k)) for k in METRIC_KEYS])
    out.print(table)


def print_where(settings: Any, summary: dict[str, Any], extra: dict[str, str] | None = None
                ) -> None:
    """Where a user looks next: report, Data Docs, audit log, model, how to serve it."""
    table = Table(title="where to look", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("where", overflow="fold")
    rows = {
        "run directory": summary.get("run_dir"),
        "model": f"{summary.get('tag')} ({'promoted to champion' if summary.get('promoted') else 'not promoted: champion kept'})",  # noqa: E501
        "compliance report": summary.get("report") or "not built",
        "data validation (Data Docs)": summary.get("validation_report") or str(settings.paths.gx),
        "audit log": f"{settings.paths.audit_log}  (verify: recops audit verify)",
        "serve it": f"recops --home {settings.paths.home} serve",
        **(extra or {}),
    }
    for k, v in rows.items():
        table.add_row(k, str(v))
    out.print(table)


def _with_segments(settings: Any, summary: dict[str, Any]) -> dict[str, Any]:
    import json

    mpath = Path(summary["run_dir"]) / "metrics.json"
    if mpath.exists():
        summary = {**summary, "per_segment": json.loads(mpath.read_text()).get("per_segment", {})}
    return summary


def run(
    ctx: typer.Context,
    dataset: Dataset = None, mode: Mode = None, dp: DP = None, epochs: Epochs = None,
    budget: Budget = None, events: Events = None, items: Items = None, users: Users = None,
    columns: Columns = None, item_attributes: ItemAttributes = None,
    timestamp_unit: TimestampUnit = None,
    use_executor: Annotated[bool, typer.Option(
        "--use-executor", help="Run tasks through the LocalExecutor instead of in the "
        "`airflow dags test` process.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v",
                                          help="Print Airflow's log as it runs.")] = False,
) -> None:
    """The main job: run the recops_pipeline DAG for real (`airflow dags test`), print results."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from recops.errors import RecopsError
    from recops.orchestration import airflow_runner
    from recops.orchestration.pipeline import STAGES, summary_of_run

    sources = source_overrides(events, items, users, columns, item_attributes, timestamp_unit)
    settings = ctx.obj.settings(**_overrides(dataset, mode, dp, epochs, budget), **sources)
    conf = {k: v for k, v in {"dataset": dataset, "mode": mode, "dp": dp, "epochs": epochs,
                              "budget_epsilon": budget}.items() if v is not None}
    # Paths as the settings resolved them (absolute): Airflow's tasks run in other folders.
    conf.update(source_conf({k: getattr(settings.data, k.split(".")[1]) if v is not None
                             else None for k, v in sources.items()}))
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn(
        "{task.completed}/{task.total} tasks"), TimeElapsedColumn(), console=err)
    task = bar.add_task("airflow: starting", total=len(STAGES))
    done: set[str] = set()

    def on_line(line: str) -> None:
        if verbose:
            err.print(line, markup=False, highlight=False)
        if "[DAG TEST] starting task_id=" in line:
            tid = line.split("task_id=")[1].split()[0]
            bar.update(task, description=f"airflow: {tid}")
        elif "[DAG TEST] end task task_id=" in line:
            done.add(line.split("task_id=")[1].split()[0])
            bar.update(task, completed=len(done))

    with bar:
        result = airflow_runner.dags_test(settings, "recops_pipeline", conf,
                                          use_executor=use_executor, on_line=on_line)
    if not result.ok:
        where = f"task(s) {', '.join(result.failed_tasks)}" if result.failed_tasks else "the run"
        raise RecopsError(f"recops_pipeline failed at {where}: {result.error or 'see the log'} "
                          f"(Airflow log: {result.log_path})")
    run_id = result.run_id
    if run_id is None:  # a successful `dags test` prints its run id; guard the type
        raise RecopsError(f"recops_pipeline succeeded but its log names no run id "
                          f"(Airflow log: {result.log_path})")
    summary = _with_segments(settings, summary_of_run(settings, run_id))
    print_metrics(summary, f"test metrics, run {summary['run_id']} "
                           f"({settings.data.dataset}, {settings.train.mode})")
    timing = Table(title=f"Airflow tasks ({result.wall_s:.0f} s wall)")
    timing.add_column("task")
    timing.add_column("seconds", justify="right")
    for tid, secs in result.task_seconds.items():
        timing.add_row(tid, f"{secs:.1f}")
    out.print(timing)
    print_where(settings, summary, {"airflow log": str(result.log_path),
                                    "airflow home": str(settings.paths.airflow_home)})


def pipeline(
    ctx: typer.Context,
    dataset: Dataset = None, mode: Mode = None, dp: DP = None, epochs: Epochs = None,
    budget: Budget = None, events: Events = None, items: Items = None, users: Users = None,
    columns: Columns = None, item_attributes: ItemAttributes = None,
    timestamp_unit: TimestampUnit = None,
) -> None:
    """Run the same pipeline stages in this process, without Airflow."""
    from recops.orchestration import pipeline as pl

    sources = source_overrides(events, items, users, columns, item_attributes, timestamp_unit)
    settings = ctx.obj.settings(**_overrides(dataset, mode, dp, epochs, budget), **sources)
    timing = Table(title="stages")
    timing.add_column("stage")
    timing.add_column("seconds", justify="right")
    timing.add_column("result", overflow="fold")

    def on_stage(name: str, result: dict[str, Any], secs: float) -> None:
        shown = {k: v for k, v in result.items() if k in ("staged_id", "dataset_version", "run_dir",
                                                          "passed", "tag", "promoted", "report")}
        err.print(f"[green]✓[/] {name} ({secs:.1f} s)", highlight=False)
        timing.add_row(name, f"{secs:.1f}", ", ".join(f"{k}={v}" for k, v in shown.items()))

    with err.status("running the pipeline"):
        summary = pl.run_pipeline(settings, progress=False, on_stage=on_stage)
    out.print(timing)
    summary = _with_segments(settings, summary)
    print_metrics(summary, f"test metrics, run {summary['run_id']} "
                           f"({settings.data.dataset}, {settings.train.mode})")
    print_where(settings, summary)


def retrain(
    ctx: typer.Context,
    mode: Mode = None, dp: DP = None, budget: Budget = None,
    epochs: Annotated[int | None, typer.Option("--epochs", "-e", help=(
        "Fine-tuning epochs (else retrain.finetune_epochs, unset: min(train.epochs, 5)).")
    )] = None,
    replay: Annotated[float | None, typer.Option("--replay", help=(
        "Share of older users replayed into fine-tuning, in [0, 1] "
        "(else retrain.replay_fraction).")
    )] = None,
    min_events: Annotated[int, typer.Option("--min-events", min=1,
                          help="Skip the cycle when fewer new feedback events wait.")] = 1,
    airflow: Annotated[bool, typer.Option("--airflow/--no-airflow",
                       help="Run the recops_retrain DAG through `airflow dags test`.")] = False,
) -> None:
    """One continual-learning cycle: feedback since the last cycle -> warm-started challenger."""
    from recops.errors import RecopsError
    from recops.orchestration import continual
    from recops.schema import METRIC_KEYS

    settings = ctx.obj.settings(**_overrides(None, mode, dp, None, budget),
                                **{"retrain.replay_fraction": replay,
                                   "retrain.finetune_epochs": epochs})
    if airflow:
        from recops.orchestration import airflow_runner
        from recops.orchestration.pipeline import summary_of_run

        conf = {k: v for k, v in {"mode": mode, "dp": dp, "budget_epsilon": budget,
                                  "replay_fraction": replay, "finetune_epochs": epochs}.items()
                if v is not None}
        with err.status("airflow: recops_retrain"):
            result = airflow_runner.dags_test(settings, "recops_retrain", conf)
        if not result.ok:
            raise RecopsError(f"recops_retrain failed at {', '.join(result.failed_tasks) or 'run'}"
                              f": {result.error or 'see the log'} (log: {result.log_path})")
        rdir = settings.paths.runs / str(result.run_id)
        if not (rdir / "register.json").exists():
            out.print("no new feedback: the cycle was skipped")
            return
        summary = _with_segments(settings, summary_of_run(settings, str(result.run_id)))
        print_metrics(summary, f"newest-period test metrics, cycle {summary['run_id']}")
        print_where(settings, summary, {"airflow log": str(result.log_path)})
        return
    with err.status("retraining"):
        summary = continual.run_cycle(settings, min_events=min_events)
    if "skipped" in summary:
        out.print(f"cycle skipped: {summary['skipped']}")
        return
    table = Table(title=f"newest period ({summary['n_events']} new events): challenger vs "
                        "champion")
    table.add_column("metric")
    table.add_column("challenger", justify="right")
    table.add_column("champion", justify="right")
    for k in METRIC_KEYS:
        table.add_row(k, _fmt(summary["metrics"].get(k)), _fmt(summary["champion_metrics"].get(k)))
    out.print(table)
    verdict = "promoted" if summary["promoted"] else "champion kept: " + "; ".join(
        summary.get("reasons", []))
    out.print(f"gate: {verdict}", highlight=False)
    print_where(settings, _with_segments(settings, summary))


def register(app: typer.Typer) -> None:
    """Add this area's commands to `app`."""
    app.command("run")(run)
    app.command("pipeline")(pipeline)
    app.command("retrain")(retrain)
