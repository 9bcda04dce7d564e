"""`recops replay`: the dataset's later events played against the running service as live users."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


def _fmt(stat: dict[str, Any]) -> str:
    if stat.get("mean") is None:
        return "-"
    half = stat.get("ci95")
    return f"{stat['mean']:.4f}" + (f" ± {half:.4f}" if half is not None else "")


def _diff(stat: dict[str, Any]) -> str:
    if stat.get("mean") is None:
        return "-"
    half = stat.get("ci95")
    return f"{stat['mean']:+.4f}" + (f" ± {half:.4f}" if half is not None else "")


def register(app: typer.Typer) -> None:
    """Add this area's commands to `app`."""

    @app.command("replay")
    def replay_cmd(
        ctx: typer.Context,
        rate: Annotated[float, typer.Option("--rate", help="Events started per second.")] = 10.0,
        limit: Annotated[int | None, typer.Option(
            "--limit", help="Play at most this many events (default: all of them).")] = None,
        concurrency: Annotated[int, typer.Option(
            "--concurrency", help="Events in flight at once (one user's events never "
            "overlap).")] = 4,
        url: Annotated[str | None, typer.Option(
            "--url", help="The service (default: the one `recops up` started).")] = None,
        after_swap: Annotated[int, typer.Option(
            "--after-swap", help="Keep the last N events back until the service serves a new "
            "model, so N events are scored under the retrained one.")] = 0,
        swap_timeout: Annotated[float, typer.Option(
            "--swap-timeout", help="Seconds to wait for a new model before the kept-back "
            "events.")] = 900.0,
        timeout: Annotated[float, typer.Option(
            "--timeout", help="Seconds one request may take before it counts as failed.")
        ] = 30.0,
        output: Annotated[Path | None, typer.Option(
            "--output", "-o", help="The JSON result (default <home>/reports/replay-<time>.json).",
            dir_okay=False)] = None,
    ) -> None:
        """Play the events after the lake's last one, in time order: /recommend for the user,
        then /feedback with the item they chose; online HR@10/NDCG@10 per serving model.
        Exit 1 when a request failed."""
        import time

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        from recops.core.atomic import write_json
        from recops.errors import ConfigError
        from recops.orchestration import replay
        from recops.orchestration.platform_state import platform_state

        opts = replay.ReplayOptions(rate=rate, limit=limit, concurrency=concurrency,
                                    timeout=timeout, after_swap=after_swap,
                                    swap_timeout=swap_timeout)
        opts.check()
        settings = ctx.obj.settings()
        if url is None:
            state = platform_state(settings)
            url = state.service_url if state else None
            if url is None:
                raise ConfigError("no service to replay against: the platform is not up with a "
                                  "service (`recops up`), and no --url was given")
        bar = Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[model]}"), console=err, transient=True)
        task = bar.add_task("replay", total=None, model="")
        with bar:
            result = replay.replay(settings, url, opts, on_progress=lambda done, total, model:
                                   bar.update(task, completed=done, total=total,
                                              model=model or ""))
        s = result.summary()
        path = output or settings.paths.reports / f"replay-{time.strftime('%Y%m%dT%H%M%S')}.json"
        write_json(path, result.to_dict())

        k = s["k"]
        table = Table(title=f"online quality of the lists served ({s['events_played']:,} events "
                            f"after {s['cut']}; 95% intervals, normal approximation)")
        for col in ("model", "role", "events", f"HR@{k}", f"NDCG@{k}"):
            table.add_column(col, justify="left" if col in ("model", "role") else "right")
        for i, m in enumerate(s["per_model"]):
            table.add_row(m["model"], "before" if i == 0 else "after", f"{m['events']:,}",
                          _fmt(m[f"hr@{k}"]), _fmt(m[f"ndcg@{k}"]))
        d = s["after_minus_before"]
        if s["after"]["events"]:
            table.add_row("after − before", "(unpaired)", "", _diff(d[f"hr@{k}"]),
                          _diff(d[f"ndcg@{k}"]))
        out.print(table)
        f = s["failed"]
        out.print(f"played {s['events_played']:,} events in {s['elapsed_s']:.1f} s: "
                  f"{s['rate_sustained'] or 0:.1f} events/s sustained (target {rate:g})"
                  + (f", {s['waited_for_swap_s']:.0f} s waiting for a new model"
                     if s["waited_for_swap_s"] else ""))
        out.print(f"feedback acknowledged: {s['acknowledged']:,} ({s['duplicates']} repeats); "
                  f"failed requests: {f['total']} (/recommend {f['recommend']}, /feedback "
                  f"{f['feedback']})")
        if s["new_model"]:
            out.print(f"new model {s['new_model']} first served at "
                      f"{s['new_model_first_served_at']} (before: {s['first_model']})")
        else:
            out.print(f"every list was served by {s['first_model'] or 'no model'}")
        out.print(f"result: {path}")
        if f["total"]:
            for line in f["first_errors"]:
                err.print(f"  failed: {line}", markup=False)
            raise typer.Exit(1)
