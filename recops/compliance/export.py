"""`recops subject export`: everything held about one user, in one JSON file (access request).

The file holds the user's rows themselves (lake batches, every other file and log found by
:func:`recops.compliance.places.find`, the online store's current features) and what was built
from them (runs, model versions, privacy spends, past erasures). It names the user, so it is
written only where the operator says, never under the home by default.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops import schema
from recops.compliance import places
from recops.compliance.subjects import show
from recops.core.atomic import write_json
from recops.errors import DataError
from recops.features import online_store

if TYPE_CHECKING:
    from recops.config import Settings

FORMAT = "recops-subject-export/1"


def check_out(out: Path, *, force: bool = False) -> Path:
    """Where the export may go: a new file (or ``force``) in an existing folder."""
    out = Path(out)
    if out.is_dir():
        raise DataError(f"--out {out} is a folder: name the file to write, e.g. {out}/user.json")
    if not out.parent.is_dir():
        raise DataError(f"--out {out}: folder {out.parent} does not exist; create it first")
    if out.exists() and not force:
        raise DataError(f"--out {out} exists: pick another file, or pass --force to replace it")
    return out


def online_records(settings: Settings, user_id: int) -> list[dict[str, Any]]:
    """The user's current online features (through Feast's online read), or nothing."""
    if not online_store.count_user_rows(settings, user_id):
        return []
    from recops.features.feast_online import online_features

    return places.records(online_features(settings, [user_id]))


def gather(settings: Settings, user_id: int) -> dict[str, Any]:
    """The export's content; DataError when nothing is held about the user, nor ever was."""
    from recops.core.lake import Lake

    view = show(settings, user_id)
    if not (view.batches or view.copies or view.online_rows or view.erasures or view.models):
        raise DataError(f"recops holds nothing about user {user_id} under "
                        f"{settings.paths.home} and never did (no rows, no erasure, no model): "
                        "no export written. Check the id with `recops subject show`")
    lake = Lake(settings.paths.lake)
    lake_rows = []
    for b in view.batches:
        df = lake.read(b["table"], [b["batch_id"]])
        lake_rows.append({**b, "records": places.records(df[df[schema.USER_ID] == user_id])})
    held = []
    for c in view.copies:
        if c["kind"] == "orphan":
            continue
        place = places.Place(c["kind"], c["where"], c["path"], c["rows"])
        held.append({**c, "records": places.read(settings, place, user_id)})
    return {
        "format": FORMAT, "user_id": user_id, "subject": view.subject,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "home": str(settings.paths.home),
        "lake": lake_rows,
        "files_and_logs": held,
        "online_store": {"where": online_store.where(settings),
                         "records": online_records(settings, user_id)},
        "runs": view.runs, "models": view.models, "privacy_spends": view.privacy_spends,
        "erasures": [{"erasure_id": r["details"].get("erasure_id"), "time": r.get("time"),
                      "reason": r["details"].get("reason")} for r in view.erasures],
    }


def export(settings: Settings, user_id: int, out: Path, *, force: bool = False) -> dict[str, Any]:
    """Write :func:`gather`'s content to ``out`` (atomically); returns a summary of it."""
    out = check_out(out, force=force)
    data = gather(settings, user_id)
    write_json(out, data)
    return {"path": str(out), "lake_rows": sum(len(b["records"]) for b in data["lake"]),
            "places": len(data["files_and_logs"]),
            "online_rows": len(data["online_store"]["records"]),
            "runs": len(data["runs"]), "models": len(data["models"])}
