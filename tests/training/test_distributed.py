"""Data-parallel training: torchrun with gloo (2 processes), DP-SGD through Opacus' DPDDP, world
size 1 equal to one process, a crashed rank failing the run, bad settings refused."""

from __future__ import annotations

import math
import socket
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
import torch.distributed as dist
from torch.utils.data import RandomSampler

from recops.config import load_settings
from recops.core.supervisor import free_port
from recops.errors import ConfigError, TrainingError
from recops.training.distributed import Ranks, ShardSampler
from recops.training.launch import LOG, check_launch, train_distributed
from recops.training.privacy import PrivacyLedger, epsilon_for
from recops.training.sequences import SequenceData
from recops.training.trainer import train_model
from tests.conftest import run_cli
from tests.training.conftest import cyclic_interactions, tiny_settings

# The clock never steers the learning rate: same steps, same rates, in any process.
STEPS = {"train.epochs": 2, "train.max_minutes": 1e6}


@pytest.fixture
def data() -> SequenceData:
    inter, items = cyclic_interactions(n_users=80, n_items=24)
    return SequenceData.from_interactions(inter, items, max_len=12)


def two(home: Path, **overrides: object):
    """Tiny settings for 2 processes on a free rendezvous port."""
    return tiny_settings(home, **{"train.distributed.nproc_per_node": 2,
                                  "train.distributed.rdzv_endpoint": f"127.0.0.1:{free_port()}",
                                  **STEPS, **overrides})


# -- one process ------------------------------------------------------------------------------

def test_shard_sampler_splits_the_single_process_order_across_ranks() -> None:
    n = 10
    single = RandomSampler(range(n), generator=torch.Generator().manual_seed(3))
    alone = ShardSampler(n, torch.Generator().manual_seed(3), rank=0, world=1)
    for _ in range(3):  # epoch after epoch, one rank walks RandomSampler's order
        assert list(alone) == list(single)
    shards = [list(ShardSampler(n, torch.Generator().manual_seed(3), rank=r, world=3))
              for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]  # equal steps: 10 padded to 12
    assert set().union(*shards) == set(range(n))
    order = list(RandomSampler(range(n), generator=torch.Generator().manual_seed(3)))
    padded = order + order[:2]
    assert shards == [padded[r::3] for r in range(3)]


def test_world_size_one_through_ddp_is_the_one_process_model(home, data) -> None:
    """The data-parallel path in a group of one (gloo) trains exactly today's model."""
    s = tiny_settings(home, **STEPS)
    plain = train_model(s, data, progress=False)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0,
                            world_size=1)
    try:
        ddp = train_model(s, data, progress=False, ranks=Ranks(0, 1, 0, torch.device("cpu")))
    finally:
        dist.destroy_process_group()
    a, b = plain.checkpoint["state_dict"], ddp.checkpoint["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert round(ddp.valid_metrics["ndcg@10"], 4) == round(plain.valid_metrics["ndcg@10"], 4)
    assert [r["loss"] for r in ddp.history] == [r["loss"] for r in plain.history]


@pytest.mark.parametrize(("overrides", "says"), [
    ({"train.distributed.nproc_per_node": 0}, "'train.distributed.nproc_per_node' (got 0)"),
    ({"train.distributed.nnodes": 0}, "'train.distributed.nnodes' (got 0)"),
    ({"train.distributed.rdzv_endpoint": "localhost"}, "must be host:port"),
    ({"train.distributed.rdzv_endpoint": "127.0.0.1:70000"}, "port in 1..65535"),
    ({"train.distributed.rdzv_endpoint": "127.0.0.1:"}, "must be host:port"),
    ({"train.distributed.rdzv_id": "a b"}, "'train.distributed.rdzv_id'"),
])
def test_bad_distributed_settings_are_one_clear_error(home, overrides, says) -> None:
    with pytest.raises(ConfigError, match="invalid configuration") as err:
        load_settings(overrides=overrides)
    assert says in str(err.value) and "RECOPS_TRAIN__DISTRIBUTED__" in str(err.value)


def test_the_cli_refuses_bad_distributed_flags_in_one_line(monkeypatch, capsys, home) -> None:
    for flags, says in ((["--nproc-per-node", "0"], "train.distributed.nproc_per_node"),
                        (["--rdzv-endpoint", "nohost"], "train.distributed.rdzv_endpoint")):
        code, out, err = run_cli(monkeypatch, capsys, "train", *flags)
        text = (out + err).strip()
        assert code == 2 and says in text and len(text.splitlines()) == 1, text


def test_what_cannot_run_data_parallel_is_refused_before_launch(home) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port} is already in use"):
            check_launch(two(home, **{"train.distributed.rdzv_endpoint": f"127.0.0.1:{port}"}))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"train.distributed.rdzv_endpoint": "no-such-host.invalid:29400"}, "does not resolve"),
        ({"train.batch_size": 33}, r"train.batch_size \(33\) must be divisible by the 2"),
        ({"model.kind": "ease"}, "fitted in closed form"),
        ({"privacy.enabled": True, "privacy.clipping": "adaptive"}, "no distributed form"),
        ({"train.device": "cuda"}, "0 CUDA device"),
    ]
    for overrides, says in cases:
        if overrides.get("train.device") == "cuda" and torch.cuda.is_available():
            continue
        with pytest.raises((ConfigError, TrainingError), match=says):
            check_launch(two(home, **overrides))


# -- torchrun, 2 processes (gloo) ---------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.integration
def test_two_processes_with_dp_sgd_account_for_the_global_batch(home, data) -> None:
    s = two(home, **{"privacy.enabled": True, "privacy.dp_epochs": 2,
                     "privacy.budget_epsilon": 100.0})
    result = train_distributed(s, data, home / "job", run_id="dp2")
    p = result.privacy
    assert p is not None and result.checkpoint["distributed"]["world_size"] == 2
    # The accountant's sample rate is the global one: the expected DP batch over all users.
    n_users = len(data.train_seqs)
    steps_per_epoch = math.ceil(n_users / 32)  # the DP batch: train.batch_size's 32 users
    assert p["sample_rate"] == pytest.approx(1 / steps_per_epoch)
    assert p["steps"] == 2 * steps_per_epoch
    again = epsilon_for(p["noise_multiplier"], p["sample_rate"], p["steps"], p["delta"],
                        p["accountant"])
    assert again == pytest.approx(p["epsilon"], rel=1e-6)
    assert p["epsilon"] <= s.privacy.target_epsilon + 0.05
    # One release, charged once (by rank 0), whatever the number of processes.
    assert [e.run_id for e in PrivacyLedger(s.paths.privacy_ledger).entries()] == ["dp2"]
    assert 0 < result.valid_metrics["ndcg@10"] <= 1


@pytest.mark.slow
@pytest.mark.integration
def test_a_crashed_rank_fails_the_run_and_keeps_no_model(home, data) -> None:
    s = two(home, **{"train.epochs": 500, "train.patience": 500})
    job = home / "job"
    killed: list[int] = []

    def kill_rank_one() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            log = job / LOG
            if log.exists() and "epoch " in log.read_text(errors="replace"):  # training runs
                for proc in psutil.process_iter(["cmdline"]):
                    try:
                        cmdline = proc.info["cmdline"] or []
                        if ("recops.training.ddp_worker" in cmdline and str(job) in cmdline
                                and proc.environ().get("RANK") == "1"):
                            proc.kill()
                            killed.append(proc.pid)
                    except psutil.Error:
                        continue
            time.sleep(0.2)

    killer = threading.Thread(target=kill_rank_one, daemon=True)
    killer.start()
    with pytest.raises(TrainingError, match="rank 1 was killed by SIGKILL; no model was kept"):
        train_distributed(s, data, job, run_id="crash")
    killer.join()
    assert killed
    assert not (job / "result").exists() and not (job / "job.pkl").exists()
    assert not (job / "settings.yaml").exists()  # the resolved settings (secrets) are gone too
