"""Start data-parallel training with torchrun and take back what rank 0 trained.

:func:`train_distributed` writes a job folder (the resolved settings, the data), runs
``python -m torch.distributed.run ... -m recops.training.ddp_worker <job>`` under the process
supervisor, and returns rank 0's :class:`~recops.training.trainer.TrainResult` only when every
rank exited cleanly: a failed rank fails the run and nothing it trained is kept.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.core import supervisor
from recops.core.atomic import write_atomic
from recops.core.runs import RunDir
from recops.environment import PHONE_HOME_OFF
from recops.errors import ConfigError, TrainingError
from recops.paths import CHECKOUT
from recops.training.ddp_worker import JOB_DATA, JOB_SETTINGS, RESULT
from recops.training.distributed import rank_batch, rank_threads, world_size
from recops.training.models import MODELS, load_checkpoint, read_checkpoint
from recops.training.trainer import TrainResult, item_text

if TYPE_CHECKING:
    import numpy as np

    from recops.config import Settings
    from recops.training.sequences import SequenceData

LOG = "torchrun.log"


def torchrun_command(settings: Settings, job: Path) -> list[str]:
    """The torchrun command line (c10d rendezvous; no restarts: a failed rank fails the run)."""
    d = settings.train.distributed
    return [sys.executable, "-m", "torch.distributed.run",
            "--nnodes", str(d.nnodes), "--nproc-per-node", str(d.nproc_per_node),
            "--rdzv-backend", "c10d", "--rdzv-endpoint", d.rdzv_endpoint,
            "--rdzv-id", d.rdzv_id, "--max-restarts", "0",
            "-m", "recops.training.ddp_worker", str(job)]


def check_endpoint(settings: Settings) -> None:
    """On one node the rendezvous endpoint must be a free port of this machine."""
    d = settings.train.distributed
    host, _, port = d.rdzv_endpoint.rpartition(":")
    where = f"train.distributed.rdzv_endpoint {d.rdzv_endpoint}"
    try:
        infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"{where}: host {host!r} does not resolve ({exc.strerror})") from None
    if d.nnodes > 1:
        return  # another node may host the rendezvous
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"{where}: port {port} is already in use on this machine; "
                                  "give a free port") from None
            raise ConfigError(f"{where}: cannot host the rendezvous on this machine with "
                              f"nnodes 1 ({exc.strerror}); give a local address") from None


def check_launch(settings: Settings) -> None:
    """Refuse, before starting anything, settings that data-parallel training cannot run."""
    kind = settings.model.kind
    if MODELS[kind].closed_form:
        raise ConfigError(f"train.distributed: model.kind '{kind}' is fitted in closed form, not "
                          "by gradient steps; set train.distributed.nproc_per_node 1 and nnodes 1")
    if settings.train.mode != "centralised":
        raise ConfigError("train.distributed is for centralised training; federated training "
                          "spreads over Flower clients (federated.*)")
    if settings.privacy.enabled and settings.privacy.clipping == "adaptive":
        raise ConfigError("privacy.clipping 'adaptive' has no distributed form in Opacus: with "
                          "train.distributed use ghost, flat or per_layer")
    rank_batch(settings, world_size(settings))
    nproc = settings.train.distributed.nproc_per_node
    if settings.train.device != "cpu":
        import torch

        if torch.cuda.device_count() < nproc:
            raise ConfigError(f"train.distributed.nproc_per_node is {nproc} on train.device "
                              f"{settings.train.device!r}, but this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s): one per process")
    check_endpoint(settings)


def _failure(log: Path, rc: int) -> str:
    """What torchrun's error report says failed: the first failed rank and its exit code."""
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    rank = re.search(r"rank\s*:\s*(\d+)", text)
    code = re.search(r"exitcode\s*:\s*(-?\d+)", text)
    if not rank or not code:
        return f"torchrun exited with code {rc}"
    value = int(code.group(1))
    how = (f"was killed by {signal.Signals(-value).name}" if value < 0
           else f"exited with code {value}")
    return f"rank {rank.group(1)} {how}"


def train_distributed(settings: Settings, data: SequenceData, job: Path, *,
                      init: dict[str, Any] | None = None,
                      text_vectors: np.ndarray | None = None, run_id: str | None = None,
                      progress: bool = False, timeout: float | None = None) -> TrainResult:
    """Train ``settings.model.kind`` on ``data`` in ``world_size(settings)`` torchrun processes.

    ``job`` is the folder the ranks share (it keeps torchrun's log). Raises
    :class:`TrainingError` naming the failed rank when any rank fails; only a clean exit of
    every rank returns the result rank 0 wrote. ``progress`` prints rank 0's epochs.
    """
    check_launch(settings)
    if settings.model.kind == "sasrec" and settings.model.text_init and text_vectors is None:
        text_vectors = item_text(settings, data)  # once here, not encoded again by every rank
    job.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(job / RESULT, ignore_errors=True)
    settings.save(job / JOB_SETTINGS)
    write_atomic(job / JOB_DATA, pickle.dumps(
        {"data": data, "init": init, "text_vectors": text_vectors, "run_id": run_id},
        protocol=pickle.HIGHEST_PROTOCOL))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOPS_")}
    threads = str(rank_threads(settings))
    env.update(PHONE_HOME_OFF, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
               RECOPS_HOME=str(settings.paths.home),
               # The ranks run this checkout's code, whatever their working directory.
               PYTHONPATH=os.pathsep.join(filter(None, (str(CHECKOUT), env.get("PYTHONPATH")))))

    def echo(line: str) -> None:
        if not (progress and line.startswith("epoch ")):
            return
        try:
            row = json.loads(line.removeprefix("epoch "))
        except ValueError:
            row = {"epoch": line.removeprefix("epoch ")}
        print(", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in row.items()), file=sys.stderr, flush=True)

    log = job / LOG
    child = supervisor.start(f"torchrun ({world_size(settings)} training processes)",
                             torchrun_command(settings, job), env, log, append=False,
                             error=TrainingError, grace=10.0)
    try:
        rc = child.watch(timeout, on_line=echo, check=False)
    finally:
        for name in (JOB_DATA, JOB_SETTINGS):  # the data and the secrets do not outlive the run
            (job / name).unlink(missing_ok=True)
    if rc != 0:
        shutil.rmtree(job / RESULT, ignore_errors=True)
        raise TrainingError(f"distributed training failed: {_failure(log, rc)}; no model was "
                            f"kept. torchrun's log {log} ends:\n{supervisor.log_tail(log)}")
    out = RunDir(job / RESULT)
    ckpt = read_checkpoint(out.file(RunDir.CHECKPOINT))
    result = TrainResult(load_checkpoint(ckpt), ckpt, out.read_json(RunDir.HISTORY),
                         dict(ckpt.get("valid_metrics") or {}), out.read_json(RunDir.PRIVACY))
    shutil.rmtree(job / RESULT)  # handed over: the caller keeps it (TrainResult.save)
    return result
