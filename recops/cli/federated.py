"""`recops federated --engine simulation|deployment`: train with Flower, watch the rounds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console

out = Console()

Clients = Annotated[int | None, typer.Option("--clients", "-n", help="Number of clients "
                    "(federated.num_clients, at least 2).")]
Partition = Annotated[str | None, typer.Option("--partition", help="iid or dirichlet "
                      "(federated.partition).")]
Alpha = Annotated[float | None, typer.Option("--alpha", help="Dirichlet concentration; small = "
                  "more non-IID (federated.dirichlet_alpha).")]
Strategy = Annotated[str | None, typer.Option("--strategy", help="fedavg, fedprox, fedavgm or "
                     "fedadam (federated.strategy).")]
ServerLr = Annotated[float | None, typer.Option("--server-lr", help="Server step along the mean "
                     "update for fedavgm/fedadam; 0 = the strategy's default "
                     "(federated.server_lr).")]
ServerMomentum = Annotated[float | None, typer.Option("--server-momentum", help="fedavgm's "
                           "momentum, in [0, 1) (federated.server_momentum).")]
Rounds = Annotated[int | None, typer.Option("--rounds", "-r", help="federated.rounds.")]
LocalEpochs = Annotated[int | None, typer.Option("--local-epochs", help="federated.local_epochs.")]
Fraction = Annotated[float | None, typer.Option("--fraction", help="Fraction of clients sampled "
                     "per round, in (0, 1] (federated.fraction_train).")]
MinClients = Annotated[int | None, typer.Option("--min-clients", help="federated.min_clients.")]
ClientDP = Annotated[str | None, typer.Option("--client-dp", help="off, fixed or adaptive "
                     "clipping for client-level DP (federated.client_dp).")]
Noise = Annotated[float | None, typer.Option("--noise", help="Client-level noise multiplier "
                  "(federated.client_noise_multiplier).")]
Clip = Annotated[float | None, typer.Option("--clip", help="Client update clipping norm "
                 "(federated.client_clipping_norm).")]
SampleDP = Annotated[bool | None, typer.Option("--sample-dp/--no-sample-dp", help="User-level "
                     "DP-SGD (Opacus) inside each client (privacy.enabled).")]
SecAgg = Annotated[bool | None, typer.Option("--secure-aggregation/--no-secure-aggregation",
                   help="SecAgg+: the server learns only the sum of the clients' clipped updates "
                   "(federated.secure_aggregation).")]
Shares = Annotated[int | None, typer.Option("--secagg-shares", help="SecAgg+ shares per client, "
                   "odd, at least 3 (federated.secagg_num_shares).")]
Threshold = Annotated[int | None, typer.Option("--secagg-threshold", help="SecAgg+ shares that "
                      "recover a key: more than half the shares, fewer than all "
                      "(federated.secagg_reconstruction_threshold).")]
SecAggClip = Annotated[float | None, typer.Option("--secagg-clip", help="L2 norm each client "
                       "clips its update to under SecAgg+ (federated.secagg_clipping_range).")]
UsersAsClients = Annotated[bool | None, typer.Option("--users-as-clients/--no-users-as-clients",
                           help="Cross-device: every user is a virtual client of its own "
                           "(simulation only; federated.users_as_clients).")]
Engine = Annotated[str | None, typer.Option("--engine", "-e", help="simulation (virtual "
                   "clients in one Flower simulation) or deployment (a SuperLink and one "
                   "SuperNode process per client, over TLS) (federated.engine).")]
ClientOpt = Annotated[str | None, typer.Option("--client-optimizer", help="adam or sgd for the "
                      "clients' local epochs (federated.client_optimizer).")]
ClientLr = Annotated[float | None, typer.Option("--client-lr", help="The clients' learning "
                     "rate; 0 = train.lr (federated.client_lr).")]
RunId = Annotated[str | None, typer.Option("--run-id", help="Run name; the run directory is "
                  "<home>/runs/<run-id> (default: fed-<timestamp>).")]


def federated(ctx: typer.Context, engine: Engine = None, clients: Clients = None,
              partition: Partition = None, alpha: Alpha = None, strategy: Strategy = None,
              rounds: Rounds = None, local_epochs: LocalEpochs = None, fraction: Fraction = None,
              min_clients: MinClients = None, client_dp: ClientDP = None, noise: Noise = None,
              clip: Clip = None, sample_dp: SampleDP = None, secure_aggregation: SecAgg = None,
              secagg_shares: Shares = None, secagg_threshold: Threshold = None,
              secagg_clip: SecAggClip = None, users_as_clients: UsersAsClients = None,
              server_lr: ServerLr = None, server_momentum: ServerMomentum = None,
              client_optimizer: ClientOpt = None, client_lr: ClientLr = None,
              run_id: RunId = None) -> None:
    """Train on the lake with Flower: the rounds as they finish, then their table and plot."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from federated.report import plot_rounds, read_rounds, rounds_table
    from federated.runner import check_settings
    from recops.core.lake import Lake
    from recops.core.runs import RunDir
    from recops.orchestration.fit import ensure_features, fit, lake_tables, training_data
    from recops.orchestration.pipeline import config_hash

    flags = {"federated.engine": engine, "federated.num_clients": clients,
             "federated.partition": partition, "federated.dirichlet_alpha": alpha,
             "federated.strategy": strategy, "federated.rounds": rounds,
             "federated.local_epochs": local_epochs, "federated.fraction_train": fraction,
             "federated.min_clients": min_clients, "federated.client_dp": client_dp,
             "federated.client_noise_multiplier": noise, "federated.client_clipping_norm": clip,
             "privacy.enabled": sample_dp, "federated.secure_aggregation": secure_aggregation,
             "federated.secagg_num_shares": secagg_shares,
             "federated.secagg_reconstruction_threshold": secagg_threshold,
             "federated.secagg_clipping_range": secagg_clip,
             "federated.users_as_clients": users_as_clients,
             "federated.server_lr": server_lr, "federated.server_momentum": server_momentum,
             "federated.client_optimizer": client_optimizer, "federated.client_lr": client_lr}
    settings = ctx.obj.settings(**{"train.mode": "federated", **flags})
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


def register(app: typer.Typer) -> None:
    """Add this area's commands to `app`."""
    app.command("federated")(federated)
