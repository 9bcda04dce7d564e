"""`recops up`, `recops status`, `recops down`: the platform (Airflow + the service) running."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


def register(app: typer.Typer) -> None:
    """Add this area's commands to `app`."""

    @app.command("up")
    def up_cmd(
        ctx: typer.Context,
        host: Annotated[str | None, typer.Option("--host", help="Interface of the Airflow UI "
                                                 "(platform.host; default loopback only).")
                        ] = None,
        airflow_port: Annotated[int | None, typer.Option(
            "--airflow-port", help="Port of the Airflow UI and REST API (platform.airflow_port)."
        )] = None,
        service_port: Annotated[int | None, typer.Option(
            "--service-port", help="Port of the BentoML service (serving.port).")] = None,
        timeout: Annotated[float | None, typer.Option(
            "--timeout", help="Seconds to wait for every component to be healthy "
            "(platform.start_timeout).")] = None,
        executor: Annotated[str | None, typer.Option(
            "--executor", help="Airflow's executor: local or celery (platform.executor; celery "
            "needs stores.airflow_db postgres).")] = None,
        workers: Annotated[int | None, typer.Option(
            "--workers", help="Celery workers to start (platform.celery_workers).")] = None,
    ) -> None:
        """Start Airflow (api-server, scheduler, dag-processor, triggerer; Celery workers under
        the celery executor) and the service."""
        from recops.errors import ConfigError
        from recops.orchestration import platform

        if timeout is not None and timeout <= 0:
            raise ConfigError(f"--timeout must be a positive number of seconds, not {timeout}")
        settings = ctx.obj.settings(**{"platform.host": host,
                                       "platform.airflow_port": airflow_port,
                                       "serving.port": service_port,
                                       "platform.executor": executor,
                                       "platform.celery_workers": workers})
        with err.status("recops up") as spinner:
            result = platform.up(settings, timeout=timeout,
                                 on_progress=lambda m: spinner.update(escape(m)))
        state = result.state
        user, password = state.login()
        if result.already_up:
            out.print(f"recops is already up (home {state.home}).")
        else:
            out.print(f"recops is up: {', '.join(result.started)} started, every component "
                      f"healthy after {result.seconds:.1f} s.")
        out.print(f"  Airflow UI:  {state.ui_url}  (user {user}, password {password}; "
                  f"stored in {state.password_file})")
        if state.service_url:
            out.print(f"  service:     {state.service_url}  (champion {state.champion})")
        else:
            out.print("  no champion yet, so no service: make one with `recops run` (or `make run`"
                      "; with the platform up, trigger recops_pipeline in the UI), then "
                      "`recops up` again.")
        out.print("  status:      recops status    stop: recops down")

    @app.command("status")
    def status_cmd(ctx: typer.Context) -> None:
        """Each component's PID, port and health, and each DAG's last run (exit 1 if unhealthy)."""
        from recops.orchestration.platform_health import status

        settings = ctx.obj.settings()
        st = status(settings)
        if st.state is None or not st.up:
            stale = " (its state file named only dead processes)" if st.state else ""
            out.print(f"recops is not up{stale}: start it with `recops up`.")
            raise typer.Exit(1)
        table = Table(title=f"recops platform in {st.state.home}")
        for col in ("component", "PID", "port", "health", "processes", "RSS MB", "detail"):
            table.add_column(col)
        for c in st.components:
            colour = {"healthy": "green", "dead": "red", "unhealthy": "yellow"}.get(c.health, "")
            table.add_row(c.name, str(c.pid or "-"), str(c.port or "-"),
                          f"[{colour}]{c.health}[/]" if colour else c.health,
                          str(c.processes or "-"), f"{c.rss_mb:.0f}" if c.processes else "-",
                          escape(c.detail))
        out.print(table)
        rss = sum(c.rss_mb for c in st.components)
        out.print(f"{sum(c.processes for c in st.components)} processes, {rss:.0f} MB RSS in all")
        if st.dags_error:
            out.print(f"DAGs: unavailable ({escape(st.dags_error)})")
        else:
            dags = Table(title="DAGs")
            for col in ("DAG", "paused", "last run", "at", "next run after"):
                dags.add_column(col)
            for d in st.dags:
                paused = "not parsed" if d.paused is None else ("yes" if d.paused else "no")
                dags.add_row(d.dag_id, paused, d.last_run_state or "none",
                             d.last_run_at or "-", d.next_run_after or "-")
            out.print(dags)
        out.print(f"UI {st.state.ui_url}  service {st.state.service_url or '(not started)'}")
        if not st.healthy:
            out.print("some component is not healthy: `recops up` restarts the dead ones.")
            raise typer.Exit(1)

    @app.command("down")
    def down_cmd(ctx: typer.Context) -> None:
        """Stop every component `recops up` started (and everything they started)."""
        from recops.orchestration import platform

        settings = ctx.obj.settings()
        with err.status("recops down"):
            stopped = platform.down(settings)
        if stopped is None:
            out.print("recops is not up: nothing to stop.")
        elif not stopped:
            out.print("recops was not running (stale state removed): nothing to stop.")
        else:
            out.print(f"recops is down: stopped {', '.join(stopped)}.")
