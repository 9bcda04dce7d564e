"""Federated training as the pipeline calls it: partition, run Flower, account, checkpoint."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from federated.accounting import SampleLevelTracker, client_level_delta, client_level_spend
from federated.common import (
    DP_CLIENTS_FILE,
    FED_DIR,
    FINAL_STATE,
    INITIAL_STATE,
    ROUNDS_FILE,
    SETTINGS_FILE,
    SUMMARY_FILE,
    run_config_from_settings,
    shareable_settings,
)
from federated.partition import partition_users, taste_clusters, write_partitions, write_public
from federated.rounds import plan_rounds
from federated.strategies import build_strategy
from recops.config import Settings
from recops.errors import ConfigError, TrainingError
from recops.training.sequences import SequenceData

if TYPE_CHECKING:  # torch-heavy modules, imported at run time only when training
    from recops.training.models import Recommender
    from recops.training.privacy import PrivacyLedger
    from recops.training.trainer import TrainResult

Engine = Literal["simulation", "deployment"]
ENGINES = ("simulation", "deployment")
RoundCallback = Callable[[dict[str, Any]], None]


def check_settings(settings: Settings, num_clients: int | None = None) -> None:
    """Every mistake in the federated settings, found before anything starts."""
    if settings.model.kind == "pop":
        raise ConfigError("federated training needs model.kind 'sasrec' or 'mf': a popularity "
                          "model has no weights to average")
    if settings.federated.users_as_clients and settings.federated.engine != "simulation":
        raise ConfigError("federated.users_as_clients needs federated.engine 'simulation': "
                          "thousands of users are virtual clients, not one process each")
    fed = settings.federated
    if fed.superlink_address and fed.engine != "deployment":
        raise ConfigError(f"federated.superlink_address ({fed.superlink_address}) is for "
                          "federated.engine 'deployment': the simulation engine runs its own")
    if fed.superlink_address and fed.secure_aggregation:
        raise ConfigError("federated.secure_aggregation needs each client's user count to bound "
                          "its quantiser; SuperNodes with their own data (federated."
                          "superlink_address) do not tell the server")
    build_strategy(fed, num_clients or fed.num_clients, lr=settings.train.lr)


def projected_spends(settings: Settings) -> dict[str, float]:
    """ε each enabled DP mechanism will have spent after all rounds (for the budget check)."""
    from recops.training.privacy import epsilon_for

    fed, out = settings.federated, {}
    if fed.client_dp != "off":
        plan = plan_rounds(fed)
        out["client_level"] = epsilon_for(
            fed.client_noise_multiplier, plan.sample_rate, fed.rounds,
            client_level_delta(plan.num_clients, settings.privacy.delta),
            settings.privacy.accountant)
    if settings.privacy.enabled:
        # Each client calibrates σ to reach target_epsilon over all rounds it could join.
        out["sample_level"] = settings.privacy.target_epsilon
    return out


def prepare_run(settings: Settings, data: SequenceData, run_dir: Path,
                init: dict[str, Any] | None = None,
                ) -> tuple[SequenceData, Recommender, dict[str, Any]]:
    """Write settings, the per-client partitions and the initial weights under ``run_dir``.

    With ``federated.superlink_address`` the SuperNodes hold their own data: only the public
    catalogue and the server's validation set (``data``, the server's own users) are written.
    Returns the data (in the warm-start checkpoint's item index when ``init`` is given), the
    initial model and the partition manifest.
    """
    import torch

    from recops.training.trainer import initial_model, seed_everything

    run_dir = Path(run_dir)
    fed_dir = run_dir / FED_DIR
    fed_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(settings.seed)
    fed = settings.federated
    model, data = initial_model(settings, data, init)
    if fed.superlink_address:
        write_public(data, run_dir, num_clients=fed.num_clients, scheme="own-data")
    else:
        clusters = taste_clusters(data) if fed.partition == "dirichlet" else None
        parts = partition_users(data.train_users, fed.num_clients, fed.partition,
                                clusters=clusters, alpha=fed.dirichlet_alpha, seed=settings.seed)
        write_partitions(data, parts, run_dir, scheme=fed.partition)
    shareable_settings(settings).save(fed_dir / SETTINGS_FILE)  # SuperNodes read it
    torch.save(model.state_dict(), fed_dir / INITIAL_STATE)
    manifest = json.loads((run_dir / "partitions" / "manifest.json").read_text())
    return data, model, manifest


class _RoundWatcher:
    """Polls federated_rounds.json while the run goes on and reports each new round once."""

    def __init__(self, path: Path, callback: RoundCallback | None) -> None:
        self.path, self.callback, self.seen = path, callback, 0

    def __call__(self) -> None:
        if self.callback is None or not self.path.is_file():
            return
        try:
            rows = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return  # mid-replace; the next poll reads it
        for row in rows[self.seen:]:
            self.callback(row)
        self.seen = len(rows)


def train_federated(settings: Settings, data: SequenceData, *, run_dir: Path,
                    init: dict[str, Any] | None = None, engine: Engine | None = None,
                    on_round: RoundCallback | None = None, run_id: str | None = None,
                    timeout: float = 3600.0, round_timeout: float = 600.0,
                    local_batch_size: int = 0,
                    ledger: PrivacyLedger | None = None) -> TrainResult:
    """Train the recommender with Flower; returns ``trainer.TrainResult`` like central training.

    ``engine`` (default ``settings.federated.engine``; set there, so the run's records name it)
    "simulation" runs ``num_clients`` virtual clients on one machine; "deployment" starts a
    SuperLink and ``num_clients`` SuperNodes as processes on loopback with TLS, or, with
    ``federated.superlink_address``, submits to that SuperLink, whose SuperNodes hold their own
    data (only the public catalogue and the server's validation set are written). ``run_dir``
    is the Flower run's exchange folder (partitions, settings, initial and final weights; the
    ServerApp writes ``federated_rounds.json`` there);
    the run's own files (checkpoint, history, privacy) are the caller's to keep. Appends each DP
    spend to the privacy ledger. ``local_batch_size`` 0 = steps-matched
    (``federated.common.local_batch_size``).
    """
    from recops.training.evaluation import evaluate_model
    from recops.training.models import make_checkpoint
    from recops.training.privacy import PrivacyLedger, default_population
    from recops.training.trainer import TrainResult

    engine = engine or settings.federated.engine
    if engine not in ENGINES:
        raise ConfigError(f"federated engine must be one of {ENGINES}, got {engine!r}")
    settings.federated.engine = engine
    if settings.federated.users_as_clients:
        # One client per training user (an iid split into singletons); set on the caller's
        # settings so every record of the run names the real number of clients.
        settings.federated.num_clients = int(len(data.train_users))
    check_settings(settings)
    if data.n_users < settings.federated.num_clients and not settings.federated.superlink_address:
        raise TrainingError(f"{data.n_users} users cannot be split across "
                            f"{settings.federated.num_clients} clients")
    if not len(data.eval_users):
        raise TrainingError("no user has 3 or more events: there is no validation set to "
                            "evaluate rounds on")
    ledger = ledger or PrivacyLedger(settings.paths.privacy_ledger)
    population = default_population(settings)
    projected = projected_spends(settings)
    if projected:
        ledger.check_budget(settings, sum(projected.values()), population)

    run_dir = Path(run_dir)
    run_id = run_id or run_dir.name
    started = time.perf_counter()
    data, model, manifest = prepare_run(settings, data, run_dir, init)
    rounds_path = run_dir / ROUNDS_FILE
    rounds_path.unlink(missing_ok=True)
    run_config = run_config_from_settings(settings, run_dir, round_timeout=round_timeout,
                                          local_batch_size=local_batch_size)
    from federated import engines

    runner = engines.run_simulation if engine == "simulation" else engines.run_deployment
    watcher = _RoundWatcher(rounds_path, on_round)
    summary_path = run_dir / FED_DIR / SUMMARY_FILE
    final_path = run_dir / FED_DIR / FINAL_STATE
    log = run_dir / FED_DIR / "flwr-run.log"
    try:
        for attempt in (1, 2):
            start = log.stat().st_size if log.is_file() else 0
            runner(settings, run_dir, run_config, num_clients=settings.federated.num_clients,
                   timeout=timeout, poll=watcher)
            if final_path.is_file() or not _ray_start_timeout(log, start, rounds_path):
                break
            # Ray waits a fixed 30 s for its raylet; on a saturated machine that can pass
            # before any round ran. Nothing was trained or spent: try once more.
            if attempt == 1:
                logging.getLogger(__name__).warning("Ray failed to start (see %s); retrying", log)
    finally:
        # Whatever ran was spent, even if the run then failed.
        privacy = _account(settings, run_dir, ledger, population, run_id)
    if not (summary_path.is_file() and final_path.is_file()):
        raise TrainingError(f"the Flower run finished without writing {final_path.name}; the "
                            f"ServerApp failed: see {run_dir / FED_DIR / 'flwr-run.log'}")
    import torch

    model.load_state_dict(torch.load(final_path, weights_only=True))
    model.eval()
    summary = json.loads(summary_path.read_text())
    rounds = summary["rounds"]
    ev = evaluate_model(model, data, "valid")
    fed = settings.federated
    fed_meta = {"engine": engine, **summary["strategy"], "partition": fed.partition,
                "rounds": fed.rounds, "local_epochs": fed.local_epochs,
                "completed_rounds": summary["completed_rounds"],
                "wall_seconds": time.perf_counter() - started,
                "partition_sizes": [c["n_users"] for c in manifest["clients"]]}
    train_settings = {**settings.train.model_dump(), "seed": settings.seed,
                      "federated": settings.federated.model_dump(),
                      "privacy": (settings.privacy.model_dump() if settings.privacy.enabled
                                  else None)}
    history = [{"epoch": r["round"], "loss": r["train_loss"],
                **{k[len("global_"):]: v for k, v in r.items() if k.startswith("global_")}}
               for r in rounds]
    ckpt = make_checkpoint(model, data.index.item_ids,
                           model_settings=settings.model.model_dump(),
                           train_settings=train_settings, valid_metrics=ev.overall,
                           valid_per_segment=ev.per_segment, history=history, privacy=privacy,
                           run_id=run_id, training_mode="federated", federated=fed_meta,
                           n_users=data.n_users, n_eval_users=int(len(data.eval_users)))
    return TrainResult(model, ckpt, history, ev.overall, privacy)


def _ray_start_timeout(log: Path, since: int, rounds_path: Path) -> bool:
    """True when the last attempt died in Ray's start-up, before any round (safe to retry)."""
    if rounds_path.is_file() and any(r["round"] > 0 for r in json.loads(rounds_path.read_text())):
        return False
    try:
        with open(log, "rb") as f:
            f.seek(since)
            return b"timed out during startup" in f.read()
    except OSError:
        return False


def _account(settings: Settings, run_dir: Path, ledger: PrivacyLedger, population: str,
             run_id: str) -> dict[str, Any] | None:
    """Append the spend of the rounds that ran to the ledger; returns the privacy dict."""
    rounds_path = run_dir / ROUNDS_FILE
    if not rounds_path.is_file():
        return None
    rows = json.loads(rounds_path.read_text())
    done = sum(1 for r in rows if r["round"] > 0)
    fed, acc = settings.federated, settings.privacy.accountant
    out: dict[str, Any] = {}
    if fed.client_dp != "off" and done:
        plan = plan_rounds(fed)
        spend = client_level_spend(
            noise_multiplier=fed.client_noise_multiplier, clipping_norm=fed.client_clipping_norm,
            sample_rate=plan.sample_rate, rounds=done,
            delta=client_level_delta(plan.num_clients, settings.privacy.delta),
            mechanism=f"client-level-{fed.client_dp}", population=population, run_id=run_id,
            accountant=acc, unit="user" if fed.users_as_clients else "client")
        ledger.append(spend)
        out["client_level"] = spend.to_dict()
    dp_path = run_dir / FED_DIR / DP_CLIENTS_FILE
    if settings.privacy.enabled and dp_path.is_file():
        clients = json.loads(dp_path.read_text())
        tracker = SampleLevelTracker({int(k): v for k, v in clients.items()})
        sample_spend = tracker.spend(population, run_id, acc)
        if sample_spend is not None:
            ledger.append(sample_spend)
            out["sample_level"] = sample_spend.to_dict()
    if not out:
        return None
    # The headline spend (registry metadata's "privacy"): the sample-level one when present
    # (unit = user, like centralised DP), else the client-level one.
    headline = out.get("sample_level") or out["client_level"]
    # SecAgg+ hides each client's update from the server; it adds no noise, so it changes no ε.
    return {**headline, "components": out, "secure_aggregation": fed.secure_aggregation}
