"""SecAgg+ end to end in one process: the real ServerApp (Flower's SecAggPlusWorkflow) and the real
ClientApp (secaggplus_mod) over a loopback grid that copies every message and keeps what the server
received. Plain FedAvg on the same seeds and clients is the reference."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from federated.common import FED_DIR, FINAL_STATE, SUMMARY_FILE, run_config_from_settings
from federated.partition import PARTITION_DIR, client_file
from federated.runner import check_settings, prepare_run
from recops.errors import ConfigError
from tests.federated.conftest import tiny_overrides

N = 5


def _run(tiny_data, root: Path, *, secure: bool, silent_after: dict[int, int] | None = None,
         crash: tuple[int, ...] = (), **extra: Any) -> tuple[Any, Any, Path]:
    """One round on N clients; returns (final weights, the grid, run dir)."""
    from flwr.app import Context, RecordDict

    from federated import client_app, server_app
    from federated.loopback import LoopbackGrid
    from recops.config import load_settings

    settings = load_settings(overrides=tiny_overrides(**{
        "home": str(root / "home"), "federated.num_clients": N, "federated.rounds": 1,
        "federated.secure_aggregation": secure, "federated.secagg_num_shares": N,
        "federated.secagg_reconstruction_threshold": 3, "federated.secagg_clipping_range": 10.0,
        **extra}))
    run_dir = root / ("secure" if secure else "plain")
    prepare_run(settings, tiny_data, run_dir)
    for pid in crash:  # this client's data is gone: it fails when asked to train
        (run_dir / PARTITION_DIR / client_file(pid)).write_bytes(b"corrupt")
    cfg = run_config_from_settings(settings, run_dir)
    grid = LoopbackGrid(client_app.app, cfg, N, silent_after=silent_after)
    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=cfg)
    server_app.main(grid, ctx)
    return torch.load(run_dir / FED_DIR / FINAL_STATE), grid, run_dir


@pytest.fixture(scope="module")
def plain(tiny_data, tmp_path_factory):
    """Plain FedAvg: the final weights, each client's trained weights and its user count."""
    final, grid, run_dir = _run(tiny_data, tmp_path_factory.mktemp("plain"), secure=False)
    initial = torch.load(run_dir / FED_DIR / "initial_state.pt")
    clients = {}
    for msg in grid.received:
        if msg.metadata.message_type == "train" and "arrays" in msg.content:
            m = msg.content["metrics"]
            clients[int(m["partition-id"])] = (
                {k: v.numpy() for k, v in msg.content["arrays"].items()}, int(m["num-examples"]))
    assert sorted(clients) == list(range(N))
    return final, initial, clients


def _received_arrays(messages: list[Any]) -> list[np.ndarray]:
    """Every numeric array in what the server received: array records and serialised arrays
    inside config records (where SecAgg+ puts its masked vectors)."""
    from flwr.common import bytes_to_ndarray

    out: list[np.ndarray] = []
    for msg in messages:
        if msg.has_error():
            continue
        for record in msg.content.array_records.values():
            out += [a.numpy() for a in record.values()]
        for record in msg.content.config_records.values():
            for value in record.values():
                for item in value if isinstance(value, list) else [value]:
                    if not isinstance(item, bytes):
                        continue
                    # keys, shares and ciphertexts are bytes too, but not arrays
                    with contextlib.suppress(Exception):
                        out.append(bytes_to_ndarray(item))
    return out


def _leaks(arrays: list[np.ndarray], plain) -> set[int]:
    """Clients whose update (or trained weights) shows in any received array: equal within
    1e-4, or, for tensors of 256+ values, in any scaled/shifted/quantised form (|corr| > 0.5)."""
    _, initial, clients = plain
    found = set()
    for pid, (trained, _) in clients.items():
        for name, weights in trained.items():
            update = weights - initial[name].numpy()
            for arr in arrays:
                if arr.shape != weights.shape:
                    continue
                x = arr.astype(np.float64)
                equal = np.allclose(x, weights, atol=1e-4) or np.allclose(x, update, atol=1e-4)
                similar = (arr.size >= 256 and x.std() > 0 and update.std() > 0
                           and abs(np.corrcoef(x.ravel(), update.ravel())[0, 1]) > 0.5)
                if equal or similar:
                    found.add(pid)
    return found


def _expected(plain, alive: list[int]) -> dict[str, np.ndarray]:
    """FedAvg (weights by users) of the given clients' updates, added to the initial weights."""
    _, initial, clients = plain
    total = sum(clients[p][1] for p in alive)
    return {name: initial[name].numpy() + sum(
        clients[p][1] * (clients[p][0][name] - initial[name].numpy()) for p in alive) / total
        for name in clients[alive[0]][0]}


def _max_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    return max(float(np.abs(np.asarray(a[k], dtype=np.float64) - np.asarray(b[k])).max())
               for k in b)


def _quantisation_bound(plain, alive: list[int], clip: float = 10.0, q: int = 2**22) -> float:
    """Each client's weighted update is rounded to one step 2·clip/q; the sum of n such errors
    is divided by the sum of the weights n_i / max n_i (plus float32 rounding)."""
    _, _, clients = plain
    biggest = max(c[1] for c in clients.values())
    ratio_sum = sum(clients[p][1] / biggest for p in alive)
    return len(alive) * (2 * clip / q) / ratio_sum + 1e-6


def test_secagg_aggregate_equals_fedavg_within_quantisation_error(tiny_data, tmp_path,
                                                                  plain) -> None:
    final, grid, run_dir = _run(tiny_data, tmp_path, secure=True)
    plain_final, _, clients = plain
    bound = _quantisation_bound(plain, list(range(N)))
    diff = _max_diff({k: v.numpy() for k, v in final.items()},
                     {k: v.numpy() for k, v in plain_final.items() if k in final})
    assert diff <= bound, (diff, bound)
    assert diff > 0  # it did go through the quantiser: not a copy of the plain run
    import json

    summary = json.loads((run_dir / FED_DIR / SUMMARY_FILE).read_text())
    sa = summary["strategy"]["secure_aggregation"]
    assert sa["enabled"] and sa["num_shares"] == N and sa["reconstruction_threshold"] == 3
    assert summary["rounds"][-1]["participants"] == N
    # the clipping range did not bind: no client's update is longer than 10
    _, initial, _ = plain
    for trained, _ in clients.values():
        norm = np.sqrt(sum(((trained[k] - initial[k].numpy()) ** 2).sum() for k in trained))
        assert norm < 10.0


def test_the_server_never_receives_an_individual_unmasked_update(tiny_data, tmp_path,
                                                                 plain) -> None:
    _, grid, _ = _run(tiny_data, tmp_path, secure=True)
    # Positive control: in plain FedAvg the same detector finds every client's weights.
    _, plain_grid, _ = _run(tiny_data, tmp_path / "again", secure=False)
    assert _leaks(_received_arrays(plain_grid.received), plain) == set(range(N))
    arrays = _received_arrays(grid.received)
    masked = [a for a in arrays if a.dtype.kind in "iu" and a.size >= 256]
    assert len(masked) >= N  # the masked vectors did arrive, as integers
    assert _leaks(arrays, plain) == set()
    # masked vectors look uniform over [0, 2^32), not like values in the quantiser's range
    assert all(a.max() > 2**31 for a in masked)


def test_dropouts_mid_round_up_to_the_threshold_are_tolerated(tiny_data, tmp_path,
                                                              plain) -> None:
    # Client 1 goes silent after sharing its keys; client 3 crashes when asked to train.
    # 5 shares, threshold 3: each key can still be recovered from 3 live holders.
    final, grid, run_dir = _run(tiny_data, tmp_path, secure=True, silent_after={2: 2},
                                crash=(3,))
    alive = [0, 2, 4]
    diff = _max_diff({k: v.numpy() for k, v in final.items()}, _expected(plain, alive))
    assert diff <= _quantisation_bound(plain, alive)
    import json

    rows = json.loads((run_dir / "federated_rounds.json").read_text())
    assert rows[-1]["participants"] == 3 and rows[-1]["failures"] == 2


def test_dropouts_beyond_the_threshold_fail_the_round_clearly(tiny_data, tmp_path) -> None:
    from federated.secagg import SecAggRoundError

    with pytest.raises(SecAggRoundError, match=r"round 1 failed in stage 'collect masked "
                       r"vectors': 2 of 5 sampled clients still answer.*3 of its 5 share"):
        _run(tiny_data, tmp_path, secure=True, silent_after={1: 2, 2: 2}, crash=(4,))
    assert not (tmp_path / "secure" / FED_DIR / FINAL_STATE).exists()


def test_a_client_clips_its_update_and_sends_no_plain_arrays(tiny_data, tmp_path) -> None:
    from federated.secagg_client import clip_update

    big = [np.full(4, 3.0, dtype=np.float32), np.full(5, 4.0, dtype=np.float32)]
    clipped, norm = clip_update(big, 1.0)
    assert norm == pytest.approx(np.sqrt(4 * 9 + 5 * 16))
    assert np.sqrt(sum((c.astype(np.float64) ** 2).sum() for c in clipped)) == pytest.approx(1.0)
    assert clipped[0].dtype == np.float32
    same, _ = clip_update(big, 100.0)
    assert same is big
    _, grid, _ = _run(tiny_data, tmp_path, secure=True, **{"federated.secagg_clipping_range": 1e-4})
    for msg in grid.received:
        assert all(len(r) == 0 for r in msg.content.array_records.values())


def test_secagg_with_dp_fedavg_noises_the_mean_of_equally_weighted_clipped_updates(
        tiny_data, tmp_path, plain) -> None:
    from federated.secagg_client import clip_update

    clip, sigma = 0.05, 1.0
    final, _, run_dir = _run(tiny_data, tmp_path, secure=True, **{
        "federated.client_dp": "fixed", "federated.client_noise_multiplier": sigma,
        "federated.client_clipping_norm": clip, "privacy.budget_epsilon": 1e6})
    _, initial, clients = plain
    names = list(final)
    clipped = {}
    for pid, (trained, _) in clients.items():
        update = [trained[k] - initial[k].numpy() for k in names]
        clipped[pid], norm = clip_update(update, clip)
        assert norm > clip  # the clip binds: the sum's sensitivity is the clip
    noise = np.concatenate([
        (final[k].numpy().astype(np.float64) - initial[k].numpy()
         - sum(clipped[p][i] for p in clients) / N).ravel() for i, k in enumerate(names)])
    assert noise.size > 5000
    # N(0, (σ·clip/m)²) on every coordinate, m = 5 equally weighted clients
    assert noise.std() == pytest.approx(sigma * clip / N, rel=0.1)
    assert abs(noise.mean()) < 5 * sigma * clip / N / np.sqrt(noise.size)
    import json

    summary = json.loads((run_dir / FED_DIR / SUMMARY_FILE).read_text())
    sa = summary["strategy"]["secure_aggregation"]
    assert sa["server_noise"] and sa["clipping_norm"] == clip
    assert summary["rounds"][-1]["epsilon"]["client_level"] > 0


@pytest.mark.parametrize("overrides, words", [
    ({"federated.secagg_num_shares": 3, "federated.secagg_reconstruction_threshold": 3},
     "must be below secagg_num_shares"),
    ({"federated.secagg_num_shares": 5, "federated.secagg_reconstruction_threshold": 2},
     "more than half"),
    ({"federated.secagg_num_shares": 2}, "secagg_num_shares"),
    ({"federated.secagg_clipping_range": 0}, "secagg_clipping_range"),
    ({"federated.secagg_quantization_range": 2**32}, "secagg_quantization_range"),
])
def test_bad_secagg_values_are_refused_when_settings_are_read(make_settings, overrides,
                                                              words) -> None:
    with pytest.raises(ConfigError, match=words):
        make_settings(**{"federated.secure_aggregation": True, **overrides})


@pytest.mark.parametrize("overrides, words", [
    ({"federated.num_clients": 4, "federated.secagg_num_shares": 5,
      "federated.secagg_reconstruction_threshold": 3}, "more than the 4 clients sampled"),
    ({"federated.num_clients": 10, "federated.secagg_num_shares": 6,
      "federated.secagg_reconstruction_threshold": 4}, "must be odd"),
    ({"federated.secagg_quantization_range": 3000}, "power of 2"),
    ({"federated.num_clients": 2000, "federated.min_clients": 2},
     r"below 2\^32, or the masked sum wraps around; lower it to at most 2097152"),
    ({"federated.client_dp": "adaptive"}, "does not combine"),
    ({"federated.client_dp": "fixed", "federated.client_clipping_norm": 2.0,
      "federated.secagg_clipping_range": 1.0}, "must not exceed"),
    ({"federated.strategy": "fedadam"}, "'fedavg' or 'fedprox'"),
])
def test_secagg_settings_that_do_not_fit_the_round_fail_before_anything_starts(
        make_settings, overrides, words) -> None:
    with pytest.raises(ConfigError, match=words):
        check_settings(make_settings(**{"federated.secure_aggregation": True, **overrides}))


def test_plain_runs_record_that_secure_aggregation_was_off(make_settings) -> None:
    from federated.strategies import build_strategy

    s = make_settings()
    _, info = build_strategy(s.federated, 10, lr=s.train.lr)
    assert info["secure_aggregation"] == {"enabled": False}
