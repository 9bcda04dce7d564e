"""`recops federated --engine simulation|deployment`: train with Flower, watch the rounds."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from recops.cli.options import section_options, with_setting_options
from recops.config_federated import FederatedSettings
from recops.config_training import PrivacySettings

out = Console()

# Every federated setting is a flag (generated from FederatedSettings: its description is the
# help), plus the sample-level DP switch. The aliases are the flags' shorter names.
ALIASES: dict[str, tuple[str, ...]] = {
    "engine": ("-e",), "num_clients": ("--clients", "-n"), "rounds": ("-r",),
    "dirichlet_alpha": ("--alpha",), "fraction_train": ("--fraction",),
    "client_noise_multiplier": ("--noise",), "client_clipping_norm": ("--clip",),
    "secagg_num_shares": ("--secagg-shares",),
    "secagg_reconstruction_threshold": ("--secagg-threshold",),
    "secagg_clipping_range": ("--secagg-clip",),
}
OPTIONS = (section_options("federated", FederatedSettings, aliases=ALIASES),
           section_options("privacy", PrivacySettings, only={"enabled"},
                           names={"enabled": ("--sample-dp",)}))
RunId = Annotated[str | None, typer.Option("--run-id", help="Run name; the run directory is "
                  "<home>/runs/<run-id> (default: fed-<timestamp>).")]


@with_setting_options(*OPTIONS)
def federated(ctx: typer.Context, overrides: dict[str, Any], run_id: RunId = None) -> None:
    """Train on the lake with Flower: the rounds as they finish, then their table and plot."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from federated.report import plot_rounds, read_rounds, rounds_table
    from federated.runner import check_settings
    from recops.core.lake import Lake
    from recops.core.runs import RunDir
    from recops.orchestration.fit import ensure_features, fit, lake_tables, training_data
    from recops.orchestration.pipeline import config_hash

    settings = ctx.obj.settings(**{"train.mode": "federated", **overrides})
    check_settings(settings)  # bad flags fail here, before any data is read
    run = RunDir.of(settings, run_id or "fed-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S"))
    tables = lake_tables(settings)
    with Console(stderr=True).status("features: Feast sources and point-in-time histories"):
        ensure_features(settings, Lake(settings.paths.lake), run_id=run.run_id)
        labelled = training_data(settings, tables)
    fed = settings.federated
    out.print(f"[bold]{fed.engine}[/]: {fed.num_clients} clients ({fed.partition}), "
              f"{fed.strategy}, {fed.rounds} rounds, client DP {fed.client_dp}, sample DP "
              f"{'on' if settings.privacy.enabled else 'off'}, secure aggregation "
              f"{'SecAgg+' if fed.secure_aggregation else 'off'}; run {run.path}")
    with Progress(TextColumn("[bold]rounds[/] {task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=out) as bar:
        task = bar.add_task("starting Flower", total=fed.rounds)

        def on_round(row: dict[str, Any]) -> None:
            desc = (f"round {row['round']}: NDCG@10 {row.get('global_ndcg@10', 0):.4f}, "
                    f"{row['participants']}/{row['sampled']} clients")
            bar.update(task, completed=row["round"], description=desc)

        info = fit(settings, run, tables, labelled, on_round=on_round,
                   key={"dataset_version": tables.dataset_version,
                        "config_hash": config_hash(settings)})
    rows = read_rounds(run.file(RunDir.ROUNDS))
    out.print(rounds_table(rows, title=f"{run.run_id}: {fed.strategy}, {fed.num_clients} clients"))
    png = plot_rounds(rows, run.file("federated_rounds.png"),
                      title=f"{fed.strategy} {fed.partition}, {fed.num_clients} clients")
    eps = "" if not info["privacy"] else f", ε={info['privacy']['epsilon']:.3f}"
    out.print(f"valid NDCG@10 {info['valid_metrics']['ndcg@10']:.4f}{eps}; checkpoint "
              f"{run.file(RunDir.CHECKPOINT)}; plot {png}")


CertOut = Annotated[Path, typer.Option("--out", help="Folder the CA certificate (ca.crt), the "
                   "SuperLink's certificate (server.pem) and key (server.key) are written to.")]


@with_setting_options(section_options("federated", FederatedSettings,
                                      only={"certificate_hosts"}))
def flower_certificates(ctx: typer.Context, overrides: dict[str, Any], out: CertOut) -> None:
    """Issue a CA and a SuperLink certificate for federated.certificate_hosts (for infra/)."""
    from federated.deployment import certificate_hosts, ensure_certificates
    from recops.errors import ConfigError

    settings = ctx.obj.settings(**overrides)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: name a folder for the certificates")
    certs = ensure_certificates(out, settings.federated.certificate_hosts)
    names = ", ".join(certificate_hosts(certs.server_cert))
    typer.echo(f"{certs.ca_cert}, {certs.server_cert}, {certs.server_key}: valid for {names}")


def register(app: typer.Typer) -> None:
    """Add this area's commands to `app`."""
    app.command("federated")(federated)
    app.command("flower-certificates")(flower_certificates)
