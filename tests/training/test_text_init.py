"""Text init helps cold items: items held out of training reach useful ranks only with text."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recops.training.evaluation import rank_targets
from recops.training.sequences import SequenceData
from recops.training.trainer import train_model
from tests.training.conftest import tiny_settings

THEMES = {
    "space": ["Journey to Mars", "Astronauts on the Moon", "Galaxy starship battle",
              "Alien planet exploration", "Rocket launch into orbit", "Space station disaster",
              "Comet among the stars", "Voyage beyond the solar system"],
    "cooking": ["Italian pasta recipes", "Baking bread at home", "French pastry chef",
                "Spicy curry kitchen", "Grilled steak dinner", "Vegan salad cookbook",
                "Chocolate cake dessert", "Sushi master cooking"],
    "football": ["World Cup soccer final", "Football team championship",
                 "Goalkeeper saves a penalty", "Striker scores a goal", "Soccer coach tactics",
                 "Stadium full of football fans", "League match highlights",
                 "Young football player dreams"],
    "horror": ["Haunted house ghosts", "Zombie apocalypse night", "Vampire blood curse",
               "Demon possession horror", "Creepy doll murders", "Werewolf under the full moon",
               "Cursed graveyard spirits", "Slasher in the dark woods"],
    "jazz": ["Jazz saxophone legends", "Piano blues club", "Swing band night",
             "Trumpet jazz improvisation", "New Orleans jazz festival", "Bebop drummer rhythm",
             "Smooth jazz ballads", "Jazz singer in Harlem"],
    "romance": ["Love letters in Paris", "Wedding day romance", "First kiss, summer love",
                "Heartbreak and reunion", "Romantic dinner date", "Falling in love again",
                "Valentine's sweethearts", "Lovers by the sea"],
}
COLD_PER_THEME = 2


def themed_data(n_users: int = 240, seed: int = 0) -> tuple[SequenceData, set[int]]:
    """Users stay within one theme; each theme's last 2 items appear only as test targets."""
    rng = np.random.default_rng(seed)
    titles, theme_of = [], []
    for t, names in enumerate(THEMES.values()):
        titles += names
        theme_of += [t] * len(names)
    items = pd.DataFrame({"item_id": np.arange(1, len(titles) + 1), "title": titles,
                          "genres": "", "text": titles})
    per = len(next(iter(THEMES.values())))
    rows = []
    cold: set[int] = set()
    for u in range(1, n_users + 1):
        t = int(rng.integers(len(THEMES)))
        base = t * per + 1
        warm = list(range(base, base + per - COLD_PER_THEME))
        cold.update(range(base + per - COLD_PER_THEME, base + per))
        hist = list(rng.permutation(warm))
        last = (int(rng.integers(base + per - COLD_PER_THEME, base + per))
                if u % 2 else hist.pop())  # half the users end on a cold item
        for j, item in enumerate([*hist, last]):
            rows.append((u, int(item), 1_600_000_000 + 100 * u + j))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "ts"])
    inter["event_timestamp"] = pd.to_datetime(inter.pop("ts"), unit="s", utc=True)
    return SequenceData.from_interactions(inter, items, max_len=8), cold


def cold_hit_rate(settings, data: SequenceData, cold: set[int], vectors) -> float:
    res = train_model(settings, data, text_vectors=vectors, progress=False)
    ranks, _ = rank_targets(res.model, data, "test", k=10)
    target_ids = data.index.to_ids(data.test_targets)
    on_cold = np.isin(target_ids, list(cold))
    assert on_cold.sum() > 50
    # no cold item was ever a training target or input
    trained = set(np.concatenate([data.index.to_ids(s) for s in data.train_seqs]).tolist())
    assert not trained & cold
    return float((ranks[on_cold] <= 10).mean())


def _settings(home, text: bool):
    return tiny_settings(home, **{"model.text_init": text, "model.max_len": 8,
                                  "train.epochs": 12, "train.patience": 12})


def test_cold_items_rank_only_with_text_vectors(home) -> None:
    """Mechanism check with hand-made text vectors (one direction per theme, plus noise)."""
    data, cold = themed_data()
    rng = np.random.default_rng(1)
    per = len(next(iter(THEMES.values())))
    theme = (data.items.item_id.to_numpy() - 1) // per
    vec = np.eye(len(THEMES))[theme] + 0.3 * rng.standard_normal((data.n_items, len(THEMES)))
    vec = (vec / np.linalg.norm(vec, axis=1, keepdims=True)).astype(np.float32)
    with_text = cold_hit_rate(_settings(home, True), data, cold, vec)
    without = cold_hit_rate(_settings(home, False), data, cold, None)
    assert with_text > 0.6 and without < 0.2 and with_text > without + 0.5, (with_text, without)


@pytest.mark.integration
@pytest.mark.slow
def test_cold_items_rank_with_the_real_sentence_encoder(home) -> None:
    """The same with all-MiniLM-L6-v2 vectors of the titles (computed offline, cached)."""
    data, cold = themed_data()
    settings = _settings(home, True)
    with_text = cold_hit_rate(settings, data, cold, None)  # train_model encodes data.items
    assert any((settings.paths.features / "cache").glob("text_*.npy"))
    without = cold_hit_rate(_settings(home, False), data, cold, None)
    assert with_text > 0.5 and with_text > without + 0.4, (with_text, without)
