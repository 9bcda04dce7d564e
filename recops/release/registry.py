"""Model registry on the BentoML model store, with an atomic champion pointer and its history.

Each registered model is a BentoML model ``recops-recommender:<version>`` holding
``checkpoint.pt`` (the checkpoint dict), ``metadata.json`` (the full registry metadata),
``items.parquet`` (the catalogue it serves: id, title, the team's id) and ``popular.json``
(fallback ranking).
The champion is ``<bentoml_home>/champion.json``, replaced atomically (write, fsync, rename)
under a lock; it keeps the stack of earlier champions so ``rollback`` can restore them.
"""

from __future__ import annotations

import json
import os
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from recops import schema
from recops.core.atomic import file_lock, write_atomic
from recops.core.audit import AuditLog
from recops.core.hashing import code_version
from recops.errors import DataError, RegistryError

if TYPE_CHECKING:
    from bentoml import Model
    from bentoml._internal.models import ModelStore

    from recops.config import Settings

MODEL_NAME = "recops-recommender"
CHAMPION = "champion"
CHECKPOINT_FILE = "checkpoint.pt"
METADATA_FILE = "metadata.json"
ITEMS_FILE = "items.parquet"
EXTERNAL_ID = "external_id"  # items.parquet: each item's id as the team writes it
POPULAR_FILE = "popular.json"


@dataclass
class ModelInfo:
    """What `recops models list/show` prints about one registered model."""

    tag: str
    created_at: str
    labels: dict[str, str]
    metadata: dict[str, Any]
    path: Path
    champion: bool = False


@dataclass
class RegisteredModel:
    """A model loaded from the store: its checkpoint, catalogue and fallback ranking."""

    tag: str
    checkpoint: dict[str, Any]
    metadata: dict[str, Any]
    items: pd.DataFrame
    popular: list[int]
    path: Path
    extra: dict[str, Any] = field(default_factory=dict)


def _store(settings: Settings) -> ModelStore:
    """The model store under this home. BentoML reads BENTOML_HOME once per process, so we
    hand it an explicit store rather than trusting the environment (tests switch homes)."""
    home = settings.paths.bentoml_home
    os.environ.setdefault("BENTOML_HOME", str(home))  # boundary: before bentoml's first import
    from bentoml._internal.models import ModelStore

    (home / "models").mkdir(parents=True, exist_ok=True)
    return ModelStore(str(home / "models"))


def _audit(settings: Settings) -> AuditLog:
    return AuditLog(settings.paths.audit_log)


def _check_checkpoint(checkpoint: Any, where: str) -> None:
    """The models' checkpoint validator, its complaint as a registry error."""
    from recops.training.models import check_checkpoint

    try:
        check_checkpoint(checkpoint, where)
    except DataError as exc:
        raise RegistryError(str(exc)) from exc


def _catalogue(settings: Settings, item_ids: list[int], items: pd.DataFrame | None) -> pd.DataFrame:
    """id + title of the items the model serves, from ``items`` or the lake's latest snapshot."""
    if items is None:
        from recops.core.lake import Lake

        items = Lake(settings.paths.lake).read_latest(schema.ITEMS)
    cat = pd.DataFrame({schema.ITEM_ID: pd.Series(item_ids, dtype="int64")})
    if len(items):
        cat = cat.merge(items[[schema.ITEM_ID, schema.TITLE]].drop_duplicates(schema.ITEM_ID),
                        on=schema.ITEM_ID, how="left")
    else:
        cat[schema.TITLE] = None
    cat[schema.TITLE] = cat[schema.TITLE].astype("string").fillna("")
    # The team's own ids (SKUs, slugs), so the service answers in them without the lake.
    from recops.core.idmap import IdMap

    cat[EXTERNAL_ID] = pd.Series([str(e) for e in IdMap(settings.paths.lake, "items")
                                  .external_ids(item_ids)], dtype="string")
    return cat


def _popularity(settings: Settings, item_ids: list[int],
                interactions: pd.DataFrame | None) -> list[int]:
    """Item ids by interaction count (most popular first), restricted to the model's items."""
    if interactions is None:
        from recops.core.lake import Lake

        interactions = Lake(settings.paths.lake).read(schema.INTERACTIONS)
    known = set(int(i) for i in item_ids)
    counts = interactions[schema.ITEM_ID].value_counts() if len(interactions) else pd.Series()
    ranked = [int(i) for i in counts.index if int(i) in known]
    # Items nobody touched go last, in id order, so the list covers the whole catalogue.
    seen = set(ranked)
    return ranked + sorted(i for i in known if i not in seen)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def register(
    settings: Settings,
    checkpoint: dict[str, Any],
    metadata: dict[str, Any],
    *,
    items: pd.DataFrame | None = None,
    interactions: pd.DataFrame | None = None,
) -> str:
    """Save a trained model with its metadata; returns its tag ``recops-recommender:<version>``.

    ``items`` / ``interactions`` default to the lake's tables (titles and the popularity
    fallback are frozen into the model so the service never reads the lake).
    """
    import torch

    _check_checkpoint(checkpoint, "checkpoint to register")
    if not isinstance(metadata, dict):
        raise RegistryError(f"metadata must be a dict, got {type(metadata).__name__}")
    meta = _jsonable(metadata)
    meta.setdefault("feature_service", schema.FEATURE_SERVICE)
    meta.setdefault("code_version", code_version())
    meta.setdefault("config", settings.public_dict())
    meta.setdefault("registered_at", datetime.now(UTC).isoformat())
    item_ids = [int(i) for i in checkpoint["item_ids"]]
    catalogue = _catalogue(settings, item_ids, items)
    popular = _popularity(settings, item_ids, interactions)

    labels = {
        "kind": str(checkpoint["kind"]),
        "run_id": str(meta.get("run_id") or ""),
        "training_mode": str(meta.get("training_mode") or ""),
        "data_version": str(meta.get("data_version") or ""),
    }
    import bentoml

    # BentoML metadata keeps a summary (shown by `bentoml models get`); the full record is a file.
    summary = {k: meta[k] for k in ("run_id", "metrics", "data_version", "feature_service",
                                    "code_version", "training_mode") if meta.get(k) is not None}
    with bentoml.models.create(MODEL_NAME, labels=labels, metadata=summary,
                               _model_store=_store(settings)) as ref:
        torch.save(checkpoint, ref.path_of(CHECKPOINT_FILE))
        Path(ref.path_of(METADATA_FILE)).write_text(json.dumps(meta, indent=2, sort_keys=True))
        catalogue.to_parquet(ref.path_of(ITEMS_FILE), index=False)
        Path(ref.path_of(POPULAR_FILE)).write_text(json.dumps(popular))
        tag = str(ref.tag)
    _audit(settings).append("register", run_id=meta.get("run_id"), inputs={
        "data_version": meta.get("data_version")}, outputs={"tag": tag},
        config=meta.get("config"), details={"metrics": meta.get("metrics"), "kind": labels["kind"]})
    return tag


def _get(settings: Settings, tag: str) -> Model:
    from bentoml.exceptions import NotFound

    if tag == CHAMPION:
        champ = champion_tag(settings)
        if champ is None:
            raise RegistryError(f"no champion in {settings.paths.bentoml_home}: promote a model "
                                "with `recops models promote TAG` (or `recops gate TAG`)")
        tag = champ
    if ":" not in tag:
        tag = f"{MODEL_NAME}:{tag}"
    try:
        model = _store(settings).get(tag)
    except (NotFound, ValueError) as exc:
        raise RegistryError(f"model '{tag}' is not in the store at {settings.paths.bentoml_home}:"
                            f" see `recops models list` ({exc})") from None
    if model.tag.name != MODEL_NAME:
        raise RegistryError(f"'{tag}' is not a recops model (name must be {MODEL_NAME})")
    return model


def resolve(settings: Settings, tag: str) -> str:
    """The full tag of ``tag`` (a version, a full tag, ``latest`` or ``champion``)."""
    return str(_get(settings, tag).tag)


def metadata(settings: Settings, tag: str) -> dict[str, Any]:
    """The registry metadata of a model (cheap: no weights loaded)."""
    model = _get(settings, tag)
    path = Path(model.path_of(METADATA_FILE))
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
        return meta
    except (OSError, json.JSONDecodeError) as exc:
        raise RegistryError(f"metadata of {model.tag} at {path} is unreadable: {exc}") from exc


def load(settings: Settings, tag: str = CHAMPION) -> RegisteredModel:
    """Load a registered model (``champion`` by default) with everything the service needs."""
    import torch

    model = _get(settings, tag)
    root = Path(model.path_of(""))
    try:
        ckpt = torch.load(root / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
        meta = json.loads((root / METADATA_FILE).read_text())
        items = pd.read_parquet(root / ITEMS_FILE)
        popular = json.loads((root / POPULAR_FILE).read_text())
    except (OSError, json.JSONDecodeError, RuntimeError, ValueError) as exc:
        raise RegistryError(f"model {model.tag} at {root} is incomplete or corrupt: {exc}") from exc
    _check_checkpoint(ckpt, f"model {model.tag}")
    return RegisteredModel(str(model.tag), ckpt, meta, items, popular, root)


def list_models(settings: Settings) -> list[ModelInfo]:
    """All registered models, newest first, the champion flagged."""
    from bentoml.exceptions import NotFound

    champ = champion_tag(settings)
    out = []
    try:
        models = _store(settings).list(MODEL_NAME)
    except NotFound:
        return []
    for m in models:
        try:
            meta = json.loads(Path(m.path_of(METADATA_FILE)).read_text())
        except (OSError, json.JSONDecodeError):
            meta = {"error": "metadata.json missing or unreadable"}
        out.append(ModelInfo(str(m.tag), m.creation_time.isoformat(), dict(m.info.labels), meta,
                             Path(m.path_of("")), str(m.tag) == champ))
    return sorted(out, key=lambda i: i.created_at, reverse=True)


# --- champion pointer -------------------------------------------------------------------------

def _pointer(settings: Settings) -> Path:
    return settings.paths.bentoml_home / "champion.json"


def read_pointer(path: Path) -> dict[str, Any] | None:
    """The champion record at ``path`` ({tag, promoted_at, history}) or None when unset."""
    try:
        rec: dict[str, Any] = json.loads(Path(path).read_text())
        return rec
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise RegistryError(f"champion pointer {path} is unreadable: {exc}") from exc


def champion_tag(settings: Settings) -> str | None:
    rec = read_pointer(_pointer(settings))
    tag: str | None = rec["tag"] if rec else None
    return tag


def _locked(settings: Settings) -> AbstractContextManager[None]:
    return file_lock(settings.paths.bentoml_home / "champion.lock")


def _write_pointer(settings: Settings, record: dict[str, Any]) -> None:
    # Readers see the old or the new pointer, never half of one.
    write_atomic(_pointer(settings), json.dumps(record, indent=2), sync_dir=True)


def promote(settings: Settings, tag: str, *, reason: str = "manual",
            decision: dict[str, Any] | None = None) -> str:
    """Make ``tag`` the champion; the previous one goes on the rollback history."""
    full = resolve(settings, tag)
    with _locked(settings):
        rec = read_pointer(_pointer(settings)) or {"tag": None, "history": []}
        previous = rec.get("tag")
        if previous == full:
            return full
        history = list(rec.get("history", []))
        if previous:
            history.append(previous)
        _write_pointer(settings, {"tag": full, "promoted_at": datetime.now(UTC).isoformat(),
                                  "reason": reason, "history": history})
    meta = metadata(settings, full)
    _audit(settings).append("promote", run_id=meta.get("run_id"), inputs={"previous": previous},
                            outputs={"champion": full}, details={"reason": reason,
                                                                 "decision": decision or {}})
    return full


def rollback(settings: Settings) -> str:
    """Restore the champion before the current one; returns the restored tag."""
    with _locked(settings):
        rec = read_pointer(_pointer(settings))
        if not rec or not rec.get("history"):
            raise RegistryError("nothing to roll back to: no earlier champion is recorded in "
                                f"{_pointer(settings)}")
        history: list[str] = list(rec["history"])
        restored = history.pop()
        resolve(settings, restored)  # still in the store?
        _write_pointer(settings, {"tag": restored, "promoted_at": datetime.now(UTC).isoformat(),
                                  "reason": f"rollback from {rec['tag']}", "history": history})
    _audit(settings).append("rollback", inputs={"previous": rec["tag"]},
                            outputs={"champion": restored})
    return restored
