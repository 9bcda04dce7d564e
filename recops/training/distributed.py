"""One training process of a torch.distributed group: its rank, its shard of the data, and the
agreements every rank must share (the clock the schedule follows, rank 0's decisions).

The process group itself is torchrun's (:mod:`recops.training.ddp_worker` joins it;
:mod:`recops.training.launch` starts it): gloo on the CPU, NCCL on CUDA.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from recops.errors import TrainingError

if TYPE_CHECKING:
    from recops.config import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """This process's place in the group: ``rank`` of ``world_size``, the device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0: the one that evaluates, decides early stopping and writes the result."""
        return self.rank == 0


def world_size(settings: Settings) -> int:
    """Processes one training run takes: ``nproc_per_node × nnodes``."""
    d = settings.train.distributed
    return d.nproc_per_node * d.nnodes


def backend_for(device: torch.device) -> str:
    """torch.distributed's backend for a device: NCCL on CUDA, gloo on the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def rank_threads(settings: Settings) -> int:
    """torch threads per rank: ``train.num_threads`` shared by this node's ranks (at least 1),
    so the node's ranks together use the threads one process would."""
    return max(1, settings.train.num_threads // settings.train.distributed.nproc_per_node)


def rank_batch(settings: Settings, world: int) -> int:
    """Samples per rank and step: ``train.batch_size`` is the global batch, split evenly."""
    batch = settings.train.batch_size
    if batch % world:
        raise TrainingError(f"train.batch_size ({batch}) must be divisible by the {world} "
                            "training processes (train.distributed.nproc_per_node × nnodes): "
                            "it is the global batch, split evenly across them")
    return batch // world


class ShardSampler(Sampler[int]):
    """This rank's share of one shuffled order of the whole dataset.

    Every rank draws the same permutation from its own copy of the seeded ``generator`` (as
    ``RandomSampler`` does with the loader's generator, so one rank walks exactly the order a
    single process would) and takes every ``world``-th index from ``rank``; the order is padded
    from its start to a multiple of ``world``, so every rank takes the same number of steps
    (as ``DistributedSampler`` pads).
    """

    def __init__(self, n: int, generator: torch.Generator, rank: int, world: int) -> None:
        self.n, self.generator, self.rank, self.world = n, generator, rank, world
        self.per_rank = math.ceil(n / world)

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.n, generator=self.generator).tolist()
        # RandomSampler draws a second order per pass and keeps none of it (its remainder of
        # n % n): draw it too, so the generator's stream stays the single process's.
        torch.randperm(self.n, generator=self.generator)
        padded = order + order[:self.per_rank * self.world - self.n]
        return iter(padded[self.rank::self.world])


def shard_loader(loader: DataLoader[tuple[torch.Tensor, ...]], ranks: Ranks,
                 batch_size: int) -> DataLoader[tuple[torch.Tensor, ...]]:
    """``loader``'s dataset as this rank's shard, ``batch_size`` samples a step, shuffled by the
    loader's own seeded generator."""
    generator = loader.generator
    if generator is None:
        raise TrainingError("a sharded loader needs the training loader's seeded generator")
    n = len(loader.dataset)  # type: ignore[arg-type]
    return DataLoader(loader.dataset, batch_size=batch_size, generator=generator,
                      sampler=ShardSampler(n, generator, ranks.rank, ranks.world_size))


def synced_clock(device: torch.device) -> Callable[[], float]:
    """Rank 0's monotonic clock, read by every rank together (a broadcast per call).

    The learning-rate schedule and ``train.max_minutes`` follow the clock: ranks reading their
    own clocks would step at different rates and their replicas would drift apart.
    """
    def clock() -> float:
        t = torch.tensor([time.monotonic()], dtype=torch.float64, device=device)
        dist.broadcast(t, src=0)
        return float(t.item())

    return clock


def from_main(value: T) -> T:
    """Rank 0's ``value`` on every rank (what rank 0 decided: a validation row, a stop)."""
    box: list[Any] = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[no-any-return]


def check_same(what: str, value: str) -> None:
    """Raise on every rank unless all ranks hold the same ``value`` (e.g. the item index hash)."""
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    if len(set(values)) > 1:
        raise TrainingError(f"the training processes disagree on {what}: "
                            + ", ".join(f"rank {r}: {v}" for r, v in enumerate(values)))


def digest(*arrays: Any) -> str:
    """A short content hash of arrays (numpy or torch), to compare across ranks."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(memoryview(a.tobytes() if hasattr(a, "tobytes") else bytes(a)))
    return h.hexdigest()[:16]
