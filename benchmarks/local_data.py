"""Where the benchmarks find MovieLens: the folder that settings' ``data.root`` names
(``RECOPS_DATA__ROOT``, which ``make`` sets when the machine has a local copy), or a release
recops downloaded earlier into its home."""

from __future__ import annotations

from pathlib import Path


def data_root() -> Path | None:
    """The folder ``data.root`` names (it holds ``ml-latest-small/`` and the other releases)."""
    from recops.config import load_settings

    return load_settings().data.root


def movielens_dir(name: str = "ml-latest-small") -> Path:
    """The local folder of release ``name``; where it would be when there is none (a benchmark
    then says it is missing)."""
    from recops.config import load_settings
    from recops.data.movielens_fetch import find_local

    settings = load_settings()
    found = find_local(name, settings.data.root, settings.paths.datasets)
    if found is not None:
        return found
    return (settings.data.root or settings.paths.datasets) / name
