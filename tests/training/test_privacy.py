"""User-level DP-SGD (training.privacy): accounting, clipping, ghost vs hooks, ledger, bad input."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from recops.config import load_settings
from recops.core.runs import RunDir
from recops.errors import AuditError, ConfigError, PrivacyBudgetExceeded, TrainingError
from recops.training.dp import grad_sample_error, make_private
from recops.training.models import read_checkpoint
from recops.training.models.sasrec import SASRec
from recops.training.privacy import PrivacyLedger, PrivacySpend, epsilon_for, resolve_delta

N_ITEMS, LEN = 30, 10

# Opacus' full-backward-hook notice fires on every backward of a model whose input needs no grad.
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook:UserWarning")


def user_sequences(n_users: int, seed: int = 0) -> TensorDataset:
    """One (x, y) per user: left-padded histories of varied length and next-item targets."""
    g = torch.Generator().manual_seed(seed)
    full = torch.randint(1, N_ITEMS + 1, (n_users, LEN + 1), generator=g)
    lengths = torch.randint(3, LEN + 2, (n_users,), generator=g)
    for u, n in enumerate(lengths.tolist()):
        full[u, : LEN + 1 - n] = 0
    x, y = full[:, :-1].contiguous(), full[:, 1:].contiguous()
    y[x == 0] = 0  # no target where the input is padding
    return TensorDataset(x, y)


def sasrec(seed: int = 0, **kw) -> SASRec:
    torch.manual_seed(seed)
    args = dict(max_len=LEN, d_model=16, n_layers=1, n_heads=2, dropout=0.0)
    return SASRec(N_ITEMS, **{**args, **kw})


def dp_settings(home, **overrides):
    return load_settings(overrides={"home": home, "privacy.enabled": True, **overrides})


def private_run(home, n_users=40, batch=8, clipping="ghost", seed=0, **overrides):
    s = dp_settings(home, **{"privacy.clipping": clipping, **overrides})
    model = sasrec(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(user_sequences(n_users), batch_size=batch)
    pt = make_private(model, opt, loader, s, n_users=n_users, epochs=2,
                      noise_generator=torch.Generator().manual_seed(seed))
    return s, pt


def train(pt, epochs: int) -> int:
    """The loop training.fit_epochs runs under DP; returns how many batches were empty."""
    empty = 0
    for _ in range(epochs):
        for x, y in pt.loader:
            if len(x) == 0:
                pt.empty_step()
                empty += 1
                continue
            pt.optimizer.zero_grad(set_to_none=True)
            pt.loss(pt.model(x), y).backward()
            pt.optimizer.step()
    return empty


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_epsilon_recomputed_from_recorded_parameters_matches_saved(home, accountant):
    s, pt = private_run(home, **{"privacy.accountant": accountant, "privacy.target_epsilon": 4.0})
    train(pt, epochs=2)
    ledger = PrivacyLedger(s.paths.privacy_ledger)
    ledger.append(pt.spend(epochs=2, run_id="r1"))

    saved = json.loads(s.paths.privacy_ledger.read_text().splitlines()[0])
    assert saved["steps"] == 2 * len(pt.loader) and saved["unit"] == "user"
    assert saved["delta"] == pytest.approx(1 / (10 * 40)) and saved["delta"] < 1 / 40
    recomputed = epsilon_for(saved["noise_multiplier"], saved["sample_rate"], saved["steps"],
                             saved["delta"], saved["accountant"])
    assert recomputed == pytest.approx(saved["epsilon"], rel=1e-6)
    # Calibrated to the target over the planned epochs, and it grows with the steps taken.
    assert 3.0 < saved["epsilon"] <= 4.0 + 0.05
    half = epsilon_for(saved["noise_multiplier"], saved["sample_rate"], saved["steps"] // 2,
                       saved["delta"], saved["accountant"])
    assert half < saved["epsilon"]


def test_per_sample_gradient_norms_are_clipped_and_the_update_noised(home):
    C = 0.05
    _, pt = private_run(home, n_users=40, batch=10, clipping="flat",
                        **{"privacy.max_grad_norm": C})
    x, y = next(x_y for x_y in pt.loader if len(x_y[0]) > 1)
    pt.optimizer.zero_grad(set_to_none=True)
    pt.loss(pt.model(x), y).backward()
    pt.optimizer.step()
    params = list(pt.optimizer.params)
    # The per-sample gradients Opacus computed (one row per user in the batch) ...
    per_sample = torch.cat([p.grad_sample.reshape(len(x), -1) for p in params], dim=1)
    norms = per_sample.norm(dim=1)
    assert norms.max() > 2 * C, "the test needs gradients larger than C to show clipping"
    factor = (C / (norms + 1e-6)).clamp(max=1.0)
    clipped = per_sample * factor[:, None]
    assert clipped.norm(dim=1).max() <= C + 1e-5
    # ... and the optimizer summed exactly those clipped rows, then added N(0, (sigma*C)^2).
    summed = torch.cat([p.summed_grad.reshape(-1) for p in params])
    assert torch.allclose(summed, clipped.sum(dim=0), atol=1e-6)
    noised = torch.cat([p.grad.reshape(-1) for p in params]) * pt.optimizer.expected_batch_size
    noise = noised - summed
    assert noise.std().item() == pytest.approx(pt.noise_multiplier * C, rel=0.05)
    assert not torch.allclose(noised, summed)


def test_ghost_and_hooks_give_the_same_clipped_gradient_without_noise(home):
    C = 0.05
    g_x, g_y = user_sequences(12, seed=3).tensors
    grads = {}
    for clipping in ("ghost", "flat"):
        _, pt = private_run(home, n_users=40, clipping=clipping, seed=1,
                            **{"privacy.max_grad_norm": C})
        pt.optimizer.noise_multiplier = 0.0  # isolate clipping from the noise
        pt.optimizer.zero_grad(set_to_none=True)
        loss = pt.loss(pt.model(g_x), g_y)
        loss.backward()
        pt.optimizer.step()
        grads[clipping] = (float(loss.item()), [p.grad.clone() for p in pt.optimizer.params])
    (loss_g, ghost), (loss_h, hooks) = grads["ghost"], grads["flat"]
    assert loss_g == pytest.approx(loss_h, rel=1e-5)
    flat_g = torch.cat([g.reshape(-1) for g in ghost])
    flat_h = torch.cat([g.reshape(-1) for g in hooks])
    assert flat_h.abs().max() > 0
    assert torch.allclose(flat_g, flat_h, atol=1e-6, rtol=1e-4)
    # Clipping was active: the clipped mean is smaller than the plain mean gradient.
    model = sasrec(1)
    from recops.training.models.base import sequence_ce

    sequence_ce(model(g_x), g_y).mean().backward()
    plain = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    assert flat_h.norm() < plain.norm()


def test_per_layer_clipping_bounds_each_tensor_and_so_the_whole_user_gradient(home):
    C = 0.05
    _, pt = private_run(home, n_users=40, batch=10, clipping="per_layer",
                        **{"privacy.max_grad_norm": C})
    params = list(pt.optimizer.params)
    bounds = pt.optimizer.max_grad_norms
    assert len(bounds) == len(params)
    assert sum(b * b for b in bounds) ** 0.5 == pytest.approx(C)  # one user moves ≤ C
    pt.optimizer.noise_multiplier = 0.0
    x, y = next(x_y for x_y in pt.loader if len(x_y[0]) > 1)
    pt.optimizer.zero_grad(set_to_none=True)
    pt.loss(pt.model(x), y).backward()
    pt.optimizer.step()
    per_tensor = [p.grad_sample.reshape(len(x), -1) for p in params]
    assert max(float(g.norm(dim=1).max()) for g in per_tensor) > 2 * bounds[0]
    # Each tensor of each user is scaled to at most its share, then summed.
    clipped = [g * (b / (g.norm(dim=1, keepdim=True) + 1e-6)).clamp(max=1.0)
               for g, b in zip(per_tensor, bounds, strict=True)]
    whole = torch.cat(clipped, dim=1)
    assert whole.norm(dim=1).max() <= C + 1e-5
    summed = torch.cat([p.summed_grad.reshape(-1) for p in params])
    assert torch.allclose(summed, whole.sum(dim=0), atol=1e-6)
    assert pt.mechanism == "dp-sgd-per-layer"


def test_adaptive_clipping_moves_the_norm_and_accounts_the_requested_sigma(home):
    s, pt = private_run(home, n_users=40, batch=10, clipping="adaptive",
                        **{"privacy.max_grad_norm": 1e-3, "privacy.target_epsilon": 4.0})
    start = pt.optimizer.max_grad_norm
    train(pt, epochs=2)
    # Every user's gradient is far above 1e-3: the median-seeking norm must grow.
    assert pt.optimizer.max_grad_norm > 2 * start
    spend = pt.spend(epochs=2, run_id="a1")
    assert spend.mechanism == "dp-sgd-adaptive"
    # The gradient noise and the clipped-count noise together are the Gaussian mechanism
    # with the σ calibrated for the target: the same σ flat clipping gets, and what the ledger
    # recomputes ε from.
    _, flat = private_run(home, n_users=40, batch=10, clipping="flat",
                          **{"privacy.max_grad_norm": 1e-3, "privacy.target_epsilon": 4.0})
    assert spend.noise_multiplier == pytest.approx(flat.noise_multiplier)
    assert 3.0 < spend.epsilon <= 4.0 + 0.05
    assert spend.epsilon == pytest.approx(epsilon_for(
        spend.noise_multiplier, spend.sample_rate, spend.steps, spend.delta, spend.accountant),
        rel=1e-6)


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_noise_for_is_the_inverse_of_epsilon_for(accountant):
    from recops.training.privacy import noise_for

    sigma = noise_for(2.0, 0.05, 400, 1e-5, accountant)
    assert epsilon_for(sigma, 0.05, 400, 1e-5, accountant) == pytest.approx(2.0, abs=0.01)
    assert noise_for(8.0, 0.05, 400, 1e-5, accountant) < sigma  # more ε, less noise
    with pytest.raises(ValueError, match="accountant"):
        noise_for(2.0, 0.05, 400, 1e-5, "moments")


class TiedSASRecLike(nn.Module):
    """SASRec-like, but with the output layer tied to the item embedding (x @ E.T)."""

    def __init__(self) -> None:
        super().__init__()
        self.item = nn.Embedding(N_ITEMS + 1, 16)
        self.pos = nn.Embedding(LEN, 16)
        self.qkv, self.proj = nn.Linear(16, 48), nn.Linear(16, 16)
        self.ln = nn.LayerNorm(16)

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        b, t = seqs.shape
        pos = torch.arange(t).unsqueeze(0).expand(b, t).contiguous()
        h = self.item(seqs) + self.pos(pos)
        q, k, v = (z.view(b, t, 2, 8).transpose(1, 2) for z in self.qkv(h).split(16, dim=2))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = self.ln(h + self.proj(a.transpose(1, 2).reshape(b, t, 16)))
        return h @ self.item.weight.T


def test_per_sample_gradients_are_exact_for_sasrec_as_built_and_tied_weights_are_caught():
    x, y = user_sequences(4, seed=5).tensors
    text = torch.randn(N_ITEMS, 8)
    assert grad_sample_error(sasrec(dropout=0.2, n_layers=2), x, y) < 1e-4
    assert grad_sample_error(sasrec(text_dim=8, text_vectors=text), x, y) < 1e-4
    # The trap this guards against: tied output weights give wrong per-sample grads silently.
    assert grad_sample_error(TiedSASRecLike(), x, y) > 0.1


def test_ledger_sums_runs_per_population_and_survives_reopening(tmp_path):
    path = tmp_path / "audit" / "ledger.jsonl"
    spends = [(1.5, 1e-5, "ml-latest-small", "user"), (2.0, 1e-5, "ml-latest-small", "client"),
              (7.0, 1e-6, "ml-1m", "user"), (0.5, 2e-5, "ml-latest-small", "user")]
    ledger = PrivacyLedger(path)
    assert ledger.total("ml-latest-small") == (0.0, 0.0)
    for eps, delta, pop, unit in spends:
        ledger.append(PrivacySpend(epsilon=eps, delta=delta, noise_multiplier=1.0,
                                   max_grad_norm=1.0, sample_rate=0.1, steps=10, epochs=1,
                                   accountant="rdp", unit=unit, population=pop, run_id=pop))
    reopened = PrivacyLedger(path)
    eps, delta = reopened.total("ml-latest-small")
    assert eps == pytest.approx(4.0) and delta == pytest.approx(4e-5)
    assert reopened.total("ml-1m") == pytest.approx((7.0, 1e-6))
    assert len(path.read_text().splitlines()) == 4


def test_budget_refused_before_training_starts(home):
    s, pt = private_run(home, **{"privacy.target_epsilon": 8.0, "privacy.budget_epsilon": 16.0})
    ledger = PrivacyLedger(s.paths.privacy_ledger)
    assert ledger.check_budget(s, pt.projected_epsilon(), pt.population) == pytest.approx(
        16.0 - pt.projected_epsilon())
    ledger.append(PrivacySpend(epsilon=9.5, delta=1e-5, noise_multiplier=0.6, max_grad_norm=1.0,
                               sample_rate=0.2, steps=10, epochs=2, accountant="rdp",
                               population=pt.population, run_id="earlier"))
    with pytest.raises(PrivacyBudgetExceeded) as err:
        ledger.check_budget(s, pt.projected_epsilon(), pt.population)
    msg = str(err.value)
    assert "9.500" in msg and "16" in msg and "privacy.budget_epsilon" in msg
    assert pt.population in msg
    # Another population is charged separately.
    ledger.check_budget(s, pt.projected_epsilon(), "ml-1m")


def test_empty_poisson_batch_takes_a_noise_only_step(home):
    torch.manual_seed(7)  # Poisson sampling draws from torch's global generator
    # 20 users sampled with q = 1/20: about a third of the batches are empty.
    _, pt = private_run(home, n_users=20, batch=1, clipping="flat")
    before = [p.detach().clone() for p in pt.base_model.parameters()]
    empty = train(pt, epochs=1)
    assert empty > 0
    assert pt.steps_taken == len(pt.loader)  # every draw, empty or not, was accounted
    after = list(pt.base_model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    # In ghost mode too.
    _, pt = private_run(home, n_users=20, batch=1, clipping="ghost")
    pt.empty_step()
    assert pt.steps_taken == 1
    assert all(torch.isfinite(p).all() for p in pt.base_model.parameters())


def test_bad_privacy_settings_are_refused_with_the_setting_named(home):
    with pytest.raises(ConfigError, match="privacy.target_epsilon"):
        load_settings(overrides={"privacy.target_epsilon": -1})
    with pytest.raises(ConfigError, match="privacy.budget_epsilon"):
        load_settings(overrides={"privacy.budget_epsilon": 0})
    with pytest.raises(ConfigError, match="privacy.delta"):
        load_settings(overrides={"privacy.delta": 1.5})
    # delta must be below 1/n for the n users actually trained on.
    with pytest.raises(ConfigError, match=r"privacy.delta.*1/40"):
        private_run(home, n_users=40, **{"privacy.delta": 1 / 40})
    assert resolve_delta(dp_settings(home), 40) == pytest.approx(1 / 400)
    with pytest.raises(TrainingError, match="at least 2 users"):
        resolve_delta(dp_settings(home), 1)


def test_bad_training_inputs_are_refused(home):
    s = dp_settings(home)
    loader = DataLoader(user_sequences(40), batch_size=8)
    with pytest.raises(TrainingError, match="one training sample per user"):
        make_private(sasrec(), torch.optim.SGD(sasrec().parameters(), lr=0.1), loader, s,
                     n_users=39, epochs=1)
    m = sasrec()
    with pytest.raises(TrainingError, match="epochs >= 1"):
        make_private(m, torch.optim.SGD(m.parameters(), lr=0.1), loader, s, n_users=40, epochs=0)
    bn = nn.Sequential(nn.Embedding(N_ITEMS + 1, 4), nn.BatchNorm1d(LEN))
    with pytest.raises(TrainingError, match="cannot be trained with Opacus.*BatchNorm"):
        make_private(bn, torch.optim.SGD(bn.parameters(), lr=0.1), loader, s, n_users=40, epochs=1)
    m = sasrec()
    tiny = dp_settings(home, **{"privacy.target_epsilon": 1e-9})
    with pytest.raises(TrainingError, match="cannot reach privacy.target_epsilon"):
        make_private(m, torch.optim.SGD(m.parameters(), lr=0.1), loader, tiny, n_users=40,
                     epochs=1)


def test_bad_accounting_inputs_are_refused(home, tmp_path):
    for bad in [dict(noise_multiplier=0.0), dict(sample_rate=1.5), dict(delta=0.0),
                dict(steps=-1), dict(accountant="moments")]:
        args = dict(noise_multiplier=1.0, sample_rate=0.1, steps=10, delta=1e-5, accountant="rdp")
        with pytest.raises(ValueError, match=next(iter(bad))):
            epsilon_for(**{**args, **bad})
    assert epsilon_for(1.0, 0.1, 0, 1e-5) == 0.0
    with pytest.raises(ValueError, match="epsilon"):
        PrivacySpend(epsilon=-1, delta=1e-5, noise_multiplier=1, max_grad_norm=1, sample_rate=0.1,
                     steps=1, epochs=1, accountant="rdp", population="p")
    with pytest.raises(ValueError, match="population"):
        PrivacySpend(epsilon=1, delta=1e-5, noise_multiplier=1, max_grad_norm=1, sample_rate=0.1,
                     steps=1, epochs=1, accountant="rdp", population="")
    # A ledger that cannot be read never reads as "nothing spent".
    path = tmp_path / "ledger.jsonl"
    good = PrivacySpend(epsilon=1, delta=1e-5, noise_multiplier=1, max_grad_norm=1,
                        sample_rate=0.1, steps=1, epochs=1, accountant="rdp", population="p")
    PrivacyLedger(path).append(good)
    with path.open("a") as f:
        f.write('{"epsilon": "lots"\n')
    with pytest.raises(AuditError, match=r"line 2 is malformed"):
        PrivacyLedger(path).total("p")
    with pytest.raises(AuditError, match="line 2"):
        PrivacyLedger(path).check_budget(dp_settings(home), 1.0, "p")
    # Steps reported by a caller must be the steps the accountant saw.
    _, pt = private_run(home)
    with pytest.raises(TrainingError, match="accountant recorded 0"):
        pt.spend(steps=5)


# -- end to end through recops.training.trainer.train_model ---------------------------------------

def tiny_interactions(n_users: int = 40, n_items: int = 25, per_user: int = 12,
                      seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    rows = []
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    for u in range(1, n_users + 1):
        start = rng.integers(1, n_items + 1)
        for j in range(per_user):  # users walk through items in order: learnable
            rows.append((u, int((start + j - 1) % n_items + 1), 4.0, "rating",
                         t0 + pd.Timedelta(minutes=u * 100 + j)))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "event_type",
                                        "event_timestamp"])
    inter["rating"] = inter["rating"].astype("float32")
    inter["event_type"] = inter["event_type"].astype("string")
    inter["event_timestamp"] = inter["event_timestamp"].astype("datetime64[us, UTC]")
    items = pd.DataFrame({"item_id": np.arange(1, n_items + 1, dtype=np.int64)})
    items["title"] = [f"item {i}" for i in items.item_id]
    items["genres"] = "Drama"
    items["text"] = items["title"] + " Drama"
    for c in ("title", "genres", "text"):
        items[c] = items[c].astype("string")
    return inter, items


@pytest.mark.integration
def test_dp_training_saves_the_spend_with_the_checkpoint_and_in_the_ledger(home):
    from recops.training.sequences import SequenceData
    from recops.training.trainer import train_model

    s = load_settings(overrides={
        "home": home, "privacy.enabled": True, "privacy.target_epsilon": 6.0,
        "privacy.budget_epsilon": 10.0, "privacy.dp_epochs": 2, "train.batch_size": 8,
        "model.max_len": 8, "model.d_model": 16, "model.n_layers": 1, "model.dropout": 0.0})
    inter, items = tiny_interactions()
    data = SequenceData.from_interactions(inter, items, s.model.max_len)
    run = RunDir.of(s, "dp1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = train_model(s, data, progress=False, run_id="dp1")
    result.save(run)

    ledger = PrivacyLedger(s.paths.privacy_ledger)
    [entry] = ledger.entries()
    saved = read_checkpoint(run.file(RunDir.CHECKPOINT))["privacy"]
    on_disk = run.read_json(RunDir.PRIVACY)
    assert saved == on_disk == result.privacy == entry.to_dict()
    assert entry.run_id == "dp1" and entry.unit == "user" and entry.population == "ml-latest-small"
    assert entry.mechanism == "dp-sgd-ghost" and entry.delta < 1 / data.n_users
    assert 0 < entry.epsilon <= 6.0 + 0.05
    assert entry.epsilon == pytest.approx(epsilon_for(entry.noise_multiplier, entry.sample_rate,
                                                      entry.steps, entry.delta, entry.accountant),
                                          rel=1e-6)
    assert math.isfinite(result.valid_metrics["ndcg@10"])

    # A second run would pass the budget (6 spent + 6 projected > 10): refused before training.
    with pytest.raises(PrivacyBudgetExceeded, match="privacy.budget_epsilon"):
        train_model(s, data, progress=False, run_id="dp2")
    assert len(ledger.entries()) == 1
