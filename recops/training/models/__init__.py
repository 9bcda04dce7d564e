"""Recommenders behind one interface: SASRec, MF, EASE, ItemKNN, popularity; checkpoints."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recops.core.atomic import atomic_file
from recops.errors import DataError
from recops.training.models.base import Recommender
from recops.training.models.baselines import MF, Pop
from recops.training.models.itemitem import EASE, ItemKNN
from recops.training.models.sasrec import SASRec

MODELS: dict[str, type[Recommender]] = {"sasrec": SASRec, "mf": MF, "pop": Pop, "ease": EASE,
                                        "itemknn": ItemKNN}
CHECKPOINT_FORMAT = 1
CHECKPOINT_KEYS = ("format", "kind", "model_settings", "n_items", "item_ids", "state_dict",
                   "train_settings", "created_at")


def create_model(kind: str, n_items: int, model_args: dict[str, Any]) -> Recommender:
    """A fresh model of ``kind`` over ``n_items`` items (constructor args from model_args)."""
    if kind not in MODELS:
        raise DataError(f"unknown model kind '{kind}'; expected one of {sorted(MODELS)}")
    if n_items < 1:
        raise DataError(f"a model needs at least one item, got n_items={n_items}")
    return MODELS[kind](n_items, **model_args)


def make_checkpoint(model: Recommender, item_ids: np.ndarray | list[int], *,
                    model_settings: dict[str, Any], train_settings: dict[str, Any],
                    **extra: Any) -> dict[str, Any]:
    """The checkpoint dict of docs/architecture.md: plain tensors and builtins only."""
    ids = [int(i) for i in item_ids]
    if len(ids) != model.n_items:
        raise DataError(f"checkpoint: {len(ids)} item ids for a model of {model.n_items} items")
    ms = {**model_settings, **model.model_args(), "kind": model.kind}
    return {
        "format": CHECKPOINT_FORMAT, "kind": model.kind, "model_settings": ms,
        "n_items": model.n_items, "item_ids": ids,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "train_settings": dict(train_settings), "created_at": datetime.now(UTC).isoformat(),
        **extra,
    }


def check_checkpoint(ckpt: Any, where: str = "checkpoint") -> None:
    """The one checkpoint validator: a dict with every key of the format, consistent sizes."""
    if not isinstance(ckpt, dict):
        raise DataError(f"{where}: a checkpoint must be a dict, got {type(ckpt).__name__}")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise DataError(f"{where}: checkpoint is missing key(s) {missing}; it was not written by "
                        "recops.training.models.make_checkpoint")
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise DataError(f"{where}: checkpoint format {ckpt['format']!r} is not supported "
                        f"(this version reads format {CHECKPOINT_FORMAT})")
    if len(ckpt["item_ids"]) != ckpt["n_items"]:
        raise DataError(f"{where}: checkpoint has {len(ckpt['item_ids'])} item ids for "
                        f"n_items={ckpt['n_items']}")


def load_checkpoint(ckpt: dict[str, Any], *, where: str = "checkpoint") -> Recommender:
    """Rebuild the model a checkpoint describes, weights loaded, in eval mode."""
    check_checkpoint(ckpt, where)
    cls = MODELS.get(ckpt["kind"])
    if cls is None:
        raise DataError(f"{where}: unknown model kind '{ckpt['kind']}'; expected one of "
                        f"{sorted(MODELS)}")
    import inspect

    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "n_items"}
    accepted.discard("text_vectors")  # the text buffer is in the state dict
    args = {k: v for k, v in ckpt["model_settings"].items() if k in accepted}
    model = cls(int(ckpt["n_items"]), **args)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise DataError(f"{where}: weights do not fit a {ckpt['kind']} model with settings "
                        f"{args}: {str(exc).splitlines()[0]}") from exc
    return model.eval()


def extend_checkpoint(ckpt: dict[str, Any], new_item_ids: list[int],
                      new_text: np.ndarray | None = None, seed: int = 0) -> dict[str, Any]:
    """A copy of ``ckpt`` with rows for new items appended (warm start on a grown catalogue).

    New rows start small and random (zero for biases and for closed-form kinds, whose new items
    stay unscored until the next fit); the text buffer gets ``new_text`` rows (the new items'
    sentence vectors) so text-initialised models can score them at once.
    """
    check_checkpoint(ckpt, "warm-start checkpoint")
    known = set(int(i) for i in ckpt["item_ids"])
    new = [int(i) for i in dict.fromkeys(new_item_ids) if int(i) not in known]
    if not new:
        return ckpt
    g = torch.Generator().manual_seed(seed)
    cls = MODELS[ckpt["kind"]]
    sd = dict(ckpt["state_dict"])
    for key in cls.item_rows:
        if key not in sd:
            continue
        old = sd[key]
        shape = (len(new), *old.shape[1:])
        if key == "text":
            if new_text is None:
                add = torch.zeros(shape)
            else:
                add = torch.as_tensor(np.asarray(new_text), dtype=old.dtype).reshape(shape)
        elif key.endswith("bias") or key.endswith("bias.weight") or cls.closed_form:
            add = torch.zeros(shape, dtype=old.dtype)
        elif "text_dim" in ckpt["model_settings"] and ckpt["model_settings"]["text_dim"]:
            # text carries new items; their free residual starts at 0
            add = torch.zeros(shape, dtype=old.dtype)
        else:
            add = torch.randn(shape, generator=g, dtype=old.dtype) * 0.02
        sd[key] = torch.cat([old, add])
    return {**ckpt, "state_dict": sd, "n_items": ckpt["n_items"] + len(new),
            "item_ids": [*ckpt["item_ids"], *new]}


def save_checkpoint(ckpt: dict[str, Any], path: Path) -> Path:
    """Write a checkpoint atomically and durably (torch.save of plain tensors and builtins)."""
    check_checkpoint(ckpt, str(path))
    with atomic_file(Path(path)) as f:
        torch.save(ckpt, f)
    return Path(path)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; clear errors for missing/bad files."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint file {path} does not exist")
    try:
        ckpt: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises several types for a corrupt file
        raise DataError(f"checkpoint file {path} cannot be read: {exc}") from exc
    check_checkpoint(ckpt, str(path))
    return ckpt


__all__ = ["EASE", "MF", "MODELS", "ItemKNN", "Pop", "Recommender", "SASRec", "check_checkpoint",
           "create_model", "extend_checkpoint", "load_checkpoint", "make_checkpoint",
           "read_checkpoint", "save_checkpoint"]
