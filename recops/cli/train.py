"""`recops train` and `recops evaluate`: fit a recommender on the lake; measure a run."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import typer
from rich.console import Console
from rich.table import Table

from recops.cli.options import section_options, with_setting_options
from recops.config_training import DistributedSettings

out = Console()
# --nproc-per-node, --nnodes, --rdzv-endpoint, --rdzv-id: train.distributed's fields.
DISTRIBUTED = section_options("train.distributed", DistributedSettings)


def metrics_table(title: str, rows: dict[str, dict[str, float]]) -> Table:
    """One row per name (overall, then segments), one column per metric."""
    first = next(iter(rows.values()), {})
    keys = [k for k in first if k != "n_users"]
    table = Table(title=title)
    table.add_column("users")
    for k in ("n", *keys):
        table.add_column(k, justify="right")
    for name, r in rows.items():
        table.add_row(name, str(int(r.get("n_users", 0))), *(f"{r[k]:.4f}" for k in keys))
    return table


@with_setting_options(DISTRIBUTED)
def train(
    ctx: typer.Context,
    kind: Annotated[str | None, typer.Option("--kind", help="sasrec, mf, pop, ease "
                                             "or itemknn (else model.kind).")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Max epochs (train.epochs; "
                                              "with --dp, exactly privacy.dp_epochs).")
                      ] = None,
    max_minutes: Annotated[float | None, typer.Option(
        "--max-minutes", help="Wall-time budget of training (train.max_minutes).")] = None,
    max_len: Annotated[int | None, typer.Option("--max-len", help="Sequence length "
                                                "(model.max_len).")] = None,
    d_model: Annotated[int | None, typer.Option("--d-model", help="model.d_model.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="train.lr.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="train.batch_size.")
                          ] = None,
    text_init: Annotated[bool | None, typer.Option("--text-init/--no-text-init",
                         help="Start item embeddings from their text (model.text_init).")] = None,
    dp: Annotated[bool | None, typer.Option("--dp/--no-dp", help="User-level DP-SGD "
                  "(privacy.enabled).")] = None,
    epsilon: Annotated[float | None, typer.Option("--epsilon", help="privacy.target_epsilon.")
                       ] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Run name (default: a "
                      "timestamp); the run directory is <home>/runs/<run-id>.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run's last.pt.")] = False,
    init: Annotated[Path | None, typer.Option("--init", help="Warm-start from this checkpoint.",
                    dir_okay=False)] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Train a recommender on the lake (chronological leave-last-out), print validation metrics.

    With --nproc-per-node N (train.distributed) torchrun trains it in N processes."""
    from recops.core.lake import Lake
    from recops.core.runs import RunDir
    from recops.errors import ConfigError
    from recops.orchestration.fit import ensure_features, fit, lake_tables, training_data
    from recops.orchestration.pipeline import config_hash
    from recops.training.models import read_checkpoint

    settings = ctx.obj.settings(**{
        "model.kind": kind, "train.epochs": epochs, "privacy.dp_epochs": epochs,
        "train.max_minutes": max_minutes, "model.max_len": max_len,
        "model.d_model": d_model, "train.lr": lr, "train.batch_size": batch_size,
        "model.text_init": text_init, "privacy.enabled": dp, "privacy.target_epsilon": epsilon,
        **(overrides or {})})
    if resume and not run_id:
        raise ConfigError("--resume needs --run-id (the run to continue)")
    run = RunDir.of(settings, run_id or datetime.now(UTC).strftime("train-%Y%m%d-%H%M%S"))
    init_ckpt = read_checkpoint(init) if init is not None else None
    status = Console(stderr=True)
    tables = lake_tables(settings)
    with status.status("features: Feast sources and point-in-time histories"):
        ensure_features(settings, Lake(settings.paths.lake), run_id=run.run_id)
        labelled = training_data(settings, tables)
    info = fit(settings, run, tables, labelled, init=init_ckpt, progress=progress, resume=resume,
               key={"dataset_version": tables.dataset_version,
                    "config_hash": config_hash(settings),
                    "init": str(init) if init else None})
    out.print(metrics_table(f"{settings.model.kind} — validation ({info['n_users']} users, "
                            f"{info['n_items']} items)", {"all": info["valid_metrics"]}))
    if info["privacy"]:
        p = info["privacy"]
        out.print(f"privacy: ε={p['epsilon']:.3f} δ={p['delta']:.2e} σ={p['noise_multiplier']:.3f} "
                  f"C={p['max_grad_norm']} q={p['sample_rate']:.4f} steps={p['steps']}")
    out.print(f"run directory: {run.path}")


def evaluate(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A run directory (with checkpoint.pt) or a "
                                        "checkpoint file.")],
    split: Annotated[str, typer.Option("--split", help="valid or test.")] = "test",
    k: Annotated[int, typer.Option("--k", min=1, help="Cut-off for HR/NDCG/coverage.")] = 10,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write the JSON "
                      "(default: <run dir>/evaluation_<split>.json).", dir_okay=False)] = None,
) -> None:
    """Full-ranking metrics of a trained model, overall and per user segment; writes JSON."""
    from recops.core.atomic import write_json
    from recops.core.lake import Lake
    from recops.core.runs import RunDir
    from recops.errors import DataError
    from recops.orchestration.fit import ensure_features, lake_tables, training_data
    from recops.training.evaluation import evaluate_model, model_for_data
    from recops.training.models import read_checkpoint
    from recops.training.sequences import SequenceData

    if split not in ("valid", "test"):
        raise DataError(f"--split must be 'valid' or 'test', got {split!r}")
    if not path.exists():
        raise DataError(f"{path} does not exist: give a run directory or a checkpoint file")
    ckpt_path = path / RunDir.CHECKPOINT if path.is_dir() else path
    if path.is_dir() and not ckpt_path.is_file():
        raise DataError(f"{path} is a directory without {RunDir.CHECKPOINT}: not a run directory")
    ckpt = read_checkpoint(ckpt_path)
    # The histories the model was trained with (the run's labelled frame), else the lake's now.
    settings = ctx.obj.settings(**{"model.max_len": ckpt["model_settings"].get("max_len")})
    run = RunDir(ckpt_path.parent)
    tables = lake_tables(settings)
    if run.has(RunDir.LABELS):
        labelled = run.read_frame(RunDir.LABELS)
    else:
        with Console(stderr=True).status("features: point-in-time histories from Feast"):
            ensure_features(settings, Lake(settings.paths.lake))
            labelled = training_data(settings, tables)
    with Console(stderr=True).status(f"ranking every item for each user ({split})"):
        model, data = model_for_data(ckpt, SequenceData.from_labelled(
            labelled, tables.items, interactions=tables.interactions,
            negatives=tables.negatives))
        res = evaluate_model(model, data, split=cast(Literal["valid", "test"], split), k=k)
    rows = {"all": res.overall, **res.per_segment}
    target = write_json(output or ckpt_path.parent / f"evaluation_{split}.json",
                        {"checkpoint": str(ckpt_path), "kind": ckpt["kind"], "split": split,
                         "k": k, **res.to_dict()})
    out.print(metrics_table(f"{ckpt['kind']} — {split}", rows))
    out.print(f"written: {target}")


def register(app: typer.Typer) -> None:
    """Add this area's commands to `app`."""
    app.command("train")(train)
    app.command("evaluate")(evaluate)
