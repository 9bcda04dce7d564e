"""`recops federated simulate|deploy`: train with Flower, watch the rounds, plot them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console

out = Console()
fed_app = typer.Typer(help="Federated training with Flower (simulation or SuperLink/SuperNodes).",
                      no_args_is_help=True)

Clients = Annotated[int | None, typer.Option("--clients", "-n", help="Number of clients "
                    "(federated.num_clients, at least 2).")]
Partition = Annotated[str | None, typer.Option("--partition", help="iid or dirichlet "
                      "(federated.partition).")]
Alpha = Annotated[float | None, typer.Option("--alpha", help="Dirichlet concentration; small = "
                  "more non-IID (federated.dirichlet_alpha).")]
Strategy = Annotated[str | None, typer.Option("--strategy", help="fedavg, fedprox or fedadam "
                     "(federated.strategy).")]
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
Source = Annotated[str, typer.Option("--data", help="'lake' (validated data, as `recops train`) "
                   "or 'dataset' (read data.dataset directly).")]
RunId = Annotated[str | None, typer.Option("--run-id", help="Run name; the run directory is "
                  "<home>/runs/<run-id> (default: fed-<timestamp>).")]


def _settings(ctx: typer.Context, **flags: Any) -> Any:
    names = {"clients": "federated.num_clients", "partition": "federated.partition",
             "alpha": "federated.dirichlet_alpha", "strategy": "federated.strategy",
             "rounds": "federated.rounds", "local_epochs": "federated.local_epochs",
             "fraction": "federated.fraction_train", "min_clients": "federated.min_clients",
             "client_dp": "federated.client_dp", "noise": "federated.client_noise_multiplier",
             "clip": "federated.client_clipping_norm", "sample_dp": "privacy.enabled"}
    settings = ctx.obj.settings(**{"train.mode": "federated",
                                   **{names[k]: v for k, v in flags.items()}})
    from federated.runner import check_settings

    check_settings(settings)  # bad flags fail here, before any data is read
    return settings


def _data(settings: Any, source: str) -> Any:
    from recops.errors import ConfigError
    from recops.training.sequences import SequenceData

    if source == "lake":
        from recops.cli.train import _lake_tables

        inter, items, users = _lake_tables(settings)
    elif source == "dataset":
        from recops.data.loaders import load_dataset

        t = load_dataset(settings)
        inter, items, users = t.interactions, t.items, t.users
    else:
        raise ConfigError(f"--data must be 'lake' or 'dataset', got {source!r}")
    return SequenceData.from_interactions(inter, items, settings.model.max_len, users)


def _run(settings: Any, source: str, run_id: str | None, engine: str) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from federated.report import plot_rounds, read_rounds, rounds_table
    from federated.runner import train_federated
    from recops.compliance.audit import AuditLog

    run_id = run_id or "fed-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    run_dir = settings.paths.runs / run_id
    data = _data(settings, source)
    fed = settings.federated
    out.print(f"[bold]{engine}[/]: {fed.num_clients} clients ({fed.partition}), {fed.strategy}, "
              f"{fed.rounds} rounds, client DP {fed.client_dp}, sample DP "
              f"{'on' if settings.privacy.enabled else 'off'}; {data!r}; run {run_dir}")
    with Progress(TextColumn("[bold]rounds[/] {task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=out) as bar:
        task = bar.add_task("starting Flower", total=fed.rounds)

        def on_round(row: dict) -> None:
            desc = (f"round {row['round']}: NDCG@10 {row.get('global_ndcg@10', 0):.4f}, "
                    f"{row['participants']}/{row['sampled']} clients")
            bar.update(task, completed=row["round"], description=desc)

        result = train_federated(settings, data, run_dir=run_dir, engine=engine,
                                 on_round=on_round, run_id=run_id)
    rows = read_rounds(run_dir / "federated_rounds.json")
    out.print(rounds_table(rows, title=f"{run_id}: {fed.strategy}, {fed.num_clients} clients"))
    png = plot_rounds(rows, run_dir / "federated_rounds.png",
                      title=f"{fed.strategy} {fed.partition}, {fed.num_clients} clients")
    AuditLog(settings.paths.audit_log).append(
        "train", run_id=run_id, inputs={"data": source}, outputs={"run_dir": str(run_dir)},
        config=settings.public_dict(), result={"valid": result.valid_metrics,
                                               "privacy": result.privacy},
        details={"training_mode": "federated", "engine": engine})
    eps = "" if not result.privacy else f", ε={result.privacy['epsilon']:.3f}"
    out.print(f"valid NDCG@10 {result.valid_metrics['ndcg@10']:.4f}{eps}; checkpoint "
              f"{run_dir / 'checkpoint.pt'}; plot {png}")


@fed_app.command("simulate")
def simulate(ctx: typer.Context, clients: Clients = None, partition: Partition = None,
             alpha: Alpha = None, strategy: Strategy = None, rounds: Rounds = None,
             local_epochs: LocalEpochs = None, fraction: Fraction = None,
             min_clients: MinClients = None, client_dp: ClientDP = None, noise: Noise = None,
             clip: Clip = None, sample_dp: SampleDP = None, data: Source = "lake",
             run_id: RunId = None) -> None:
    """Many virtual clients on this machine (Flower simulation via `flwr run`)."""
    settings = _settings(ctx, clients=clients, partition=partition, alpha=alpha,
                         strategy=strategy, rounds=rounds, local_epochs=local_epochs,
                         fraction=fraction, min_clients=min_clients, client_dp=client_dp,
                         noise=noise, clip=clip, sample_dp=sample_dp)
    _run(settings, data, run_id, "simulation")


@fed_app.command("deploy")
def deploy(ctx: typer.Context, clients: Clients = None, partition: Partition = None,
           alpha: Alpha = None, strategy: Strategy = None, rounds: Rounds = None,
           local_epochs: LocalEpochs = None, fraction: Fraction = None,
           min_clients: MinClients = None, client_dp: ClientDP = None, noise: Noise = None,
           clip: Clip = None, sample_dp: SampleDP = None, data: Source = "lake",
           run_id: RunId = None) -> None:
    """A SuperLink and one SuperNode per client as processes on loopback, over TLS."""
    settings = _settings(ctx, clients=clients, partition=partition, alpha=alpha,
                         strategy=strategy, rounds=rounds, local_epochs=local_epochs,
                         fraction=fraction, min_clients=min_clients, client_dp=client_dp,
                         noise=noise, clip=clip, sample_dp=sample_dp)
    _run(settings, data, run_id, "deployment")


def register(app: typer.Typer) -> None:
    """Add this area's commands to `app`."""
    app.add_typer(fed_app, name="federated")
