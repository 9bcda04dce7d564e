"""The ClientApp called in-process with real Flower messages: training, clipping, DP, failures."""

from __future__ import annotations

import math

import pytest
import torch

from federated.common import arrays_from_model, run_config_from_settings
from federated.partition import client_file
from federated.runner import prepare_run


def _message(arrays, kind: str, **config):
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict

    mtype = MessageType.TRAIN if kind == "train" else MessageType.EVALUATE
    return Message(content=RecordDict({"arrays": arrays, "config": ConfigRecord(
        {"server-round": 1, **config})}), dst_node_id=1, message_type=mtype)


def _context(settings, run_dir, pid: int, n: int):
    from flwr.app import Context, RecordDict

    cfg = run_config_from_settings(settings, run_dir)
    return Context(run_id=1, node_id=pid + 1, node_config={"partition-id": pid,
                   "num-partitions": n}, state=RecordDict(), run_config=cfg)


@pytest.fixture
def prepared(make_settings, tiny_data, tmp_path):
    def prep(**overrides):
        s = make_settings(**{"federated.num_clients": 3, **overrides})
        run_dir = tmp_path / "run"
        _, model, _ = prepare_run(s, tiny_data, run_dir)
        return s, run_dir, model

    return prep


def _update_norm(before, after) -> float:
    a, b = before.to_numpy_ndarrays(), after.to_numpy_ndarrays()
    return math.sqrt(sum(float(((y - x) ** 2).sum()) for x, y in zip(a, b, strict=True)))


def test_train_moves_the_weights_and_reports_its_examples(prepared) -> None:
    from federated.client_app import app
    from federated.partition import load_partition

    s, run_dir, model = prepared()
    start = arrays_from_model(model)
    reply = app(_message(start, "train"), _context(s, run_dir, 0, 3))
    assert not reply.has_error()
    out = reply.content["arrays"]
    assert list(out.keys()) == list(start.keys())  # only trainable parameters travel
    assert "text" not in out
    assert _update_norm(start, out) > 0
    m = reply.content["metrics"]
    assert m["num-examples"] == load_partition(run_dir, 0, 3).n_users
    assert math.isfinite(m["train-loss"]) and m["train-loss"] > 0
    # steps-matched local batch: train.batch_size x this client's share of the users
    assert m["batch-size"] == round(s.train.batch_size * m["num-examples"] / 200)


def test_fixed_clipping_bounds_the_update_that_leaves_the_client(prepared) -> None:
    from federated.client_app import app

    s, run_dir, model = prepared(**{"train.lr": 0.05})
    start = arrays_from_model(model)
    free = app(_message(start, "train"), _context(s, run_dir, 1, 3)).content["arrays"]
    clipped = app(_message(start, "train", **{"client-dp": "fixed", "clipping_norm": 0.01}),
                  _context(s, run_dir, 1, 3)).content["arrays"]
    assert _update_norm(start, free) > 0.01
    assert _update_norm(start, clipped) <= 0.01 + 1e-5


def test_evaluate_scores_the_clients_own_validation_users(prepared) -> None:
    from federated.client_app import app

    s, run_dir, model = prepared()
    reply = app(_message(arrays_from_model(model), "evaluate"), _context(s, run_dir, 2, 3))
    m = reply.content["metrics"]
    assert 0.0 <= m["ndcg@10"] <= m["hr@10"] <= 1.0
    assert m["eval-users"] > 0


def test_sample_level_dp_reports_what_it_spent(prepared) -> None:
    from federated.client_app import app
    from recops.training.privacy import epsilon_for

    s, run_dir, model = prepared(**{"privacy.enabled": True, "privacy.clipping": "flat"})
    reply = app(_message(arrays_from_model(model), "train"), _context(s, run_dir, 0, 3))
    m = reply.content["metrics"]
    assert m["dp-noise"] > 0 and 0 < m["dp-rate"] <= 1 and m["dp-steps"] > 0
    # One round of a 2-round plan spends less than the run's target.
    eps = epsilon_for(m["dp-noise"], m["dp-rate"], m["dp-steps"], m["dp-delta"])
    assert 0 < eps < s.privacy.target_epsilon


def test_a_client_without_its_data_fails_loudly(prepared) -> None:
    from federated.client_app import app

    s, run_dir, model = prepared()
    (run_dir / "partitions" / client_file(1)).unlink()
    with pytest.raises(Exception, match="client-0001/users.pkl is missing"):
        app(_message(arrays_from_model(model), "train"), _context(s, run_dir, 1, 3))


def test_weights_that_do_not_fit_the_model_are_refused(prepared) -> None:
    from flwr.app import ArrayRecord

    from federated.client_app import app

    s, run_dir, _ = prepared()
    wrong = ArrayRecord({"foo": torch.zeros(3)})
    with pytest.raises(Exception, match="do not match the model"):
        app(_message(wrong, "train"), _context(s, run_dir, 0, 3))


def test_an_sgd_client_takes_plain_gradient_steps_at_its_own_rate(prepared) -> None:
    """One local step (the whole partition in one batch): the update is -client_lr × the
    gradient, so doubling the rate doubles it, and coordinates move by their gradient, not
    by ±lr each as Adam's first step does."""
    import numpy as np

    from federated.client_app import app

    updates = {}
    for lr in (0.05, 0.1):
        s, run_dir, model = prepared(**{"federated.client_optimizer": "sgd",
                                        "federated.client_lr": lr, "train.batch_size": 10_000})
        start = arrays_from_model(model)
        reply = app(_message(start, "train"), _context(s, run_dir, 0, 3))
        assert not reply.has_error()
        a, b = start.to_numpy_ndarrays(), reply.content["arrays"].to_numpy_ndarrays()
        updates[lr] = np.concatenate([(y - x).ravel() for x, y in zip(a, b, strict=True)])
    moved = np.abs(updates[0.05])[np.abs(updates[0.05]) > 0]
    assert moved.size > 0 and np.median(moved) < 0.2 * 0.05
    assert np.allclose(updates[0.1], 2 * updates[0.05], atol=1e-6, rtol=1e-3)
