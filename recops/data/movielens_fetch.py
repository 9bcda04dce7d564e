"""Where a MovieLens release lives: the format table, a local copy, or a verified download."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recops.errors import DataError, DownloadError

BASE_URL = "https://files.grouplens.org/datasets/movielens"


@dataclass(frozen=True)
class MovieLensFormat:
    """What one MovieLens release looks like on disk and where it comes from."""

    name: str
    marker: str  # the file whose presence says "this folder is the dataset"
    files: tuple[str, ...]  # files the loader reads (tags.csv is optional)
    # Published MD5 of <name>.zip (GroupLens' <name>.zip.md5). None: the release changes over
    # time ("latest"), so it is checked against the .md5 file fetched next to the zip.
    md5: str | None
    approx_mb: float


# MD5 values: GroupLens' published ml-100k.zip.md5 / ml-1m.zip.md5 / ml-25m.zip.md5, the same
# values the widely used loaders (TFDS, RecBole, torchrec) pin for these frozen releases.
FORMATS: dict[str, MovieLensFormat] = {
    "ml-latest-small": MovieLensFormat("ml-latest-small", "ratings.csv",
                                       ("ratings.csv", "movies.csv"), None, 1.0),
    "ml-100k": MovieLensFormat("ml-100k", "u.data", ("u.data", "u.item", "u.user"),
                               "0e33842e24a9c977be4e0107933c0723", 4.9),
    "ml-1m": MovieLensFormat("ml-1m", "ratings.dat", ("ratings.dat", "movies.dat", "users.dat"),
                             "c4d9eecfca2ab87c1945afe126590906", 5.9),
    "ml-25m": MovieLensFormat("ml-25m", "ratings.csv", ("ratings.csv", "movies.csv"),
                              "6b51fb2759a8657d3bfcbfc42b592ada", 262.0),
}

ProgressFn = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)

_POINT_AT_LOCAL = ("point recops at a local copy with --data-root PATH or RECOPS_DATA__ROOT=PATH "
                   "(the folder holding '{name}/' or the '{name}' folder itself)")


# ----------------------------------------------------------------------------- locating

def fmt(name: str) -> MovieLensFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise DataError(f"unknown MovieLens dataset '{name}'; supported: "
                        f"{', '.join(FORMATS)}") from None


def candidate_dirs(name: str, root: Path | None, datasets_dir: Path) -> list[Path]:
    """Where a dataset may live, in the order they are tried."""
    out: list[Path] = []
    if root is not None:
        root = Path(root).expanduser()
        out += [root / name, root]
    out.append(Path(datasets_dir) / name)
    return out


def find_local(name: str, root: Path | None, datasets_dir: Path) -> Path | None:
    """The first candidate folder holding the dataset's marker file, or None."""
    spec = fmt(name)
    for d in candidate_dirs(name, root, datasets_dir):
        if (d / spec.marker).is_file():
            # ml-latest-small and ml-25m share a layout: refuse a folder named for the other one.
            other = d.name in FORMATS and d.name != name
            if other and FORMATS[d.name].marker == spec.marker:
                if d == (Path(root).expanduser() if root else None):
                    raise DataError(f"--data-root {d} holds '{d.name}', but the dataset asked for "
                                    f"is '{name}': point at the folder that holds '{name}/'")
                continue
            return d
    return None


def resolve(name: str, root: Path | None, datasets_dir: Path, *, download: bool,
            base_url: str = BASE_URL, progress: ProgressFn | None = None) -> Path:
    """The dataset folder: found locally, else downloaded into ``datasets_dir`` when allowed."""
    found = find_local(name, root, datasets_dir)
    if found is not None:
        return found
    looked = ", ".join(str(d) for d in candidate_dirs(name, root, datasets_dir))
    if not download:
        raise DataError(f"{name} not found (looked in {looked}) and download is off "
                        f"(--no-download / data.download=false); "
                        + _POINT_AT_LOCAL.format(name=name))
    return download_dataset(name, datasets_dir, base_url=base_url, progress=progress)


# ----------------------------------------------------------------------------- download

def _fetch(resp: Any, dest: Path, *, url: str, progress: ProgressFn | None) -> str:
    """Stream an open response to ``dest``; returns the MD5 of what was written."""
    md5 = hashlib.md5(usedforsecurity=False)
    total = resp.headers.get("Content-Length")
    total_n = int(total) if total and total.isdigit() else None
    done = 0
    with open(dest, "wb") as out:
        while block := resp.read(1 << 20):
            out.write(block)
            md5.update(block)
            done += len(block)
            if progress:
                progress(done, total_n)
    if total_n is not None and done != total_n:
        raise DownloadError(f"download of {url} stopped at {done} of {total_n} bytes")
    return md5.hexdigest()


def _get(url: str, name: str, timeout: float, hint: str, body: Callable[[Any], Any]) -> Any:
    """Open ``url`` and hand the response to ``body``; network failures become DownloadError."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return body(resp)
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        reason = str(exc.reason)
    except (TimeoutError, ConnectionError) as exc:
        reason = str(exc) or type(exc).__name__
    raise DownloadError(f"could not download {name} from {url} ({reason}); offline? {hint}")


def parse_md5_file(text: str, filename: str) -> str:
    """The digest from a ``.md5`` file: BSD style ``MD5 (f) = d`` or GNU style ``d  f``."""
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.upper().startswith("MD5 (") and "=" in line:
            digest = line.rsplit("=", 1)[1].strip().lower()
        else:
            digest = line.split()[0].lower()
        if len(digest) == 32 and all(c in "0123456789abcdef" for c in digest):
            return digest
    raise DownloadError(f"the checksum file for {filename} holds no MD5 digest: {text[:80]!r}")


MAX_UNPACKED_BYTES = 4 << 30  # ml-25m unpacks to ~1.1 GB; more than this is not MovieLens


def _safe_extract(zf: zipfile.ZipFile, dest: Path) -> None:
    """Extract refusing absolute paths, '..' escapes, symlinks (zip-slip) and zip bombs."""
    dest = dest.resolve()
    total = sum(info.file_size for info in zf.infolist())
    if total > MAX_UNPACKED_BYTES:
        raise DownloadError(f"archive would unpack to {total / 1e9:.1f} GB, more than the "
                            f"{MAX_UNPACKED_BYTES / 1e9:.1f} GB any MovieLens release needs")
    for info in zf.infolist():
        target = (dest / info.filename).resolve()
        if not target.is_relative_to(dest) or Path(info.filename).is_absolute():
            raise DownloadError(f"archive member '{info.filename}' would land outside {dest}")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DownloadError(f"archive member '{info.filename}' is a symbolic link")
    zf.extractall(dest)


def download_dataset(name: str, datasets_dir: Path, *, base_url: str = BASE_URL,
                     timeout: float = 60.0, progress: ProgressFn | None = None) -> Path:
    """Fetch ``<base_url>/<name>.zip``, verify its MD5, unzip to ``datasets_dir/<name>``."""
    spec = fmt(name)
    url = f"{base_url.rstrip('/')}/{name}.zip"
    datasets_dir = Path(datasets_dir)
    datasets_dir.mkdir(parents=True, exist_ok=True)
    hint = _POINT_AT_LOCAL.format(name=name)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=datasets_dir) as tmp:
        zpath = Path(tmp) / f"{name}.zip"
        expected = spec.md5
        if expected is None:
            text = _get(url + ".md5", name, timeout, hint, lambda r: r.read(4096))
            expected = parse_md5_file(text.decode("ascii", "replace"), f"{name}.zip")
        got = _get(url, name, timeout, hint,
                   lambda r: _fetch(r, zpath, url=url, progress=progress))
        if got != expected:
            raise DownloadError(f"checksum mismatch for {url}: MD5 {got}, expected {expected}; "
                                f"the file was discarded. Retry, or {hint}")
        unpacked = Path(tmp) / "unpacked"
        try:
            with zipfile.ZipFile(zpath) as zf:
                _safe_extract(zf, unpacked)
        except zipfile.BadZipFile as exc:
            raise DownloadError(f"{url} is not a valid zip ({exc}); {hint}") from None
        # GroupLens zips hold one top folder named after the dataset.
        src = unpacked / name if (unpacked / name / spec.marker).is_file() else unpacked
        if not (src / spec.marker).is_file():
            raise DownloadError(f"{url} does not contain {name}/{spec.marker}; {hint}")
        final = datasets_dir / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(src, final)  # same filesystem: atomic, no half-unpacked dataset is ever seen
    return final
