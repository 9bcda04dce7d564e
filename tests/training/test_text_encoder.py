"""The offline sentence encoder: verified weights, sensible vectors, a content-keyed cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recops.errors import ConfigError, DataError
from recops.features import text_encoder


def test_weights_with_the_wrong_hash_are_refused(monkeypatch) -> None:
    text_encoder._load.cache_clear()
    monkeypatch.setattr(text_encoder, "WEIGHTS_SHA256", "0" * 64)
    try:
        with pytest.raises(ConfigError, match="refusing to use unverified weights"):
            text_encoder.encode_texts(["a title"])
    finally:
        text_encoder._load.cache_clear()


def test_vectors_are_cached_by_content(settings, monkeypatch) -> None:
    calls: list[list[str]] = []

    def fake(texts: list[str], batch_size: int = 64) -> np.ndarray:
        calls.append(list(texts))
        return np.ones((len(texts), text_encoder.DIM), dtype=np.float32)

    monkeypatch.setattr(text_encoder, "encode_texts", fake)
    items = pd.DataFrame({"item_id": [1, 2], "title": ["A", "B"], "genres": ["x|y", ""],
                          "text": ["A. x, y", "B"]})
    first = text_encoder.item_text_vectors(settings, items)
    again = text_encoder.item_text_vectors(settings, items)
    assert len(calls) == 1 and np.array_equal(first, again) and first.shape == (2, 384)
    text_encoder.item_text_vectors(settings, items.assign(text=["A. x, y", "B changed"]))
    assert len(calls) == 2
    assert list((settings.paths.features / "cache").glob("text_*.npy"))
    # without a text column the title and genres are used
    assert text_encoder.item_texts(items.drop(columns="text")) == ["A. x, y", "B. "]


def test_bad_inputs() -> None:
    with pytest.raises(DataError, match="list of strings"):
        text_encoder.encode_texts("just one string")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="'text' or 'title'"):
        text_encoder.item_texts(pd.DataFrame({"item_id": [1]}))
    assert text_encoder.encode_texts([]).shape == (0, 384)


@pytest.mark.integration
@pytest.mark.slow
def test_real_encoder_puts_similar_titles_close() -> None:
    v = text_encoder.encode_texts(["Toy Story (1995). Animation, Children, Comedy",
                                   "Toy Story 2 (1999). Animation, Children, Comedy",
                                   "Heat (1995). Action, Crime, Thriller"])
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
