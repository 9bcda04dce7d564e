"""The ${ENV} values this repo reads (from recops.environment.feast_env); nothing else reads env."""

from __future__ import annotations

import os
from pathlib import Path


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: run Feast through `recops features apply`, "
                           "or export the values of recops.environment.feast_env(settings)")
    return value


DATA = Path(_required("RECOPS_FEAST_DATA"))
SOURCES = DATA / "sources"
SEQ_LEN = int(os.environ.get("RECOPS_SEQ_LEN", "50"))
