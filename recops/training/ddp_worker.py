"""What torchrun runs on every rank: join the group, train, and (rank 0) write the result.

``python -m recops.training.ddp_worker <job folder>``, started by
:func:`recops.training.launch.train_distributed`, which wrote the job folder (settings and
data) and reads the result back once every rank exited cleanly.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from recops.config import load_settings
from recops.core.runs import RunDir
from recops.errors import TrainingError
from recops.training.distributed import Ranks, backend_for, check_same, digest
from recops.training.trainer import train_model

JOB_SETTINGS = "settings.yaml"  # the resolved settings (mode 0600: they may hold secrets)
JOB_DATA = "job.pkl"  # the SequenceData, warm-start checkpoint, text vectors, run id
RESULT = "result"  # rank 0's TrainResult, as a run folder's checkpoint, history and privacy


def _ranks(device_setting: str) -> Ranks:
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ["LOCAL_RANK"])
    except (KeyError, ValueError):
        raise TrainingError("recops.training.ddp_worker runs under torchrun (RANK, "
                            "WORLD_SIZE and LOCAL_RANK unset): use `recops train "
                            "--nproc-per-node N`") from None
    device = torch.device("cpu") if device_setting == "cpu" else torch.device("cuda", local)
    return Ranks(rank, world, local, device)


def run(job: Path) -> None:
    """Train one rank of the job in ``job``; rank 0 writes ``job/result`` after every rank
    finished training."""
    settings = load_settings(job / JOB_SETTINGS)
    ranks = _ranks(settings.train.device)
    if ranks.device.type == "cuda":
        torch.cuda.set_device(ranks.device)
    dist.init_process_group(backend_for(ranks.device))  # torchrun's env:// rendezvous
    try:
        payload: dict[str, Any] = pickle.loads((job / JOB_DATA).read_bytes())
        data = payload["data"]
        # Every rank must index the same items the same way, or their gradients mean
        # different things.
        check_same("the item index", digest(data.index.item_ids))

        def report(state: dict[str, Any]) -> None:  # rank 0, each epoch: the launcher's progress
            print("epoch " + json.dumps(state["history"][-1], default=float), flush=True)

        result = train_model(settings, data, init=payload["init"],
                             text_vectors=payload["text_vectors"], progress=False,
                             run_id=payload["run_id"], on_epoch=report, ranks=ranks)
        dist.barrier()  # nothing is written unless every rank got through training
        if ranks.main:
            result.checkpoint["distributed"] = {
                "world_size": ranks.world_size, "backend": backend_for(ranks.device),
                "nproc_per_node": settings.train.distributed.nproc_per_node,
                "nnodes": settings.train.distributed.nnodes}
            result.save(RunDir(job / RESULT))
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m recops.training.ddp_worker JOB_FOLDER", file=sys.stderr)
        return 2
    run(Path(args[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
