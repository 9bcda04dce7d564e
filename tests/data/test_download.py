"""Download from GroupLens, exercised without network: a local http.server serves test zips."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from recops import schema
from recops.data import movielens_fetch
from recops.data.loaders import load_dataset
from recops.data.movielens_fetch import FORMATS, download_dataset, parse_md5_file
from recops.errors import DownloadError
from tests.data.conftest import write_latest, write_ml100k


class _Server:
    """Serves files from a dict {url path: bytes}; counts requests."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hits: list[str] = []
        files, hits = self.files, self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                hits.append(self.path)
                body = files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/datasets/movielens"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.close()


def _zip_dir(d: Path, top: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(d.iterdir()):
            zf.write(f, f"{top}/{f.name}")
    return buf.getvalue()


def _md5(b: bytes) -> str:
    return hashlib.md5(b, usedforsecurity=False).hexdigest()


def _latest_zip(tmp_path: Path) -> bytes:
    return _zip_dir(write_latest(tmp_path / "zipsrc" / "ml-latest-small"), "ml-latest-small")


def test_download_verifies_md5_file_and_unpacks(server: _Server, tmp_path: Path,
                                                settings) -> None:
    blob = _latest_zip(tmp_path)
    server.files["/datasets/movielens/ml-latest-small.zip"] = blob
    # GroupLens publishes BSD-style .md5 files next to each zip.
    server.files["/datasets/movielens/ml-latest-small.zip.md5"] = (
        f"MD5 (ml-latest-small.zip) = {_md5(blob)}\n".encode())
    seen: list[tuple[int, int | None]] = []
    tables = load_dataset(settings, base_url=server.base_url,
                          progress=lambda done, total: seen.append((done, total)))
    assert len(tables.interactions) == 4 and len(tables.items) == 3
    dest = settings.paths.datasets / "ml-latest-small"
    assert (dest / "ratings.csv").is_file()
    assert seen and seen[-1] == (len(blob), len(blob))
    # Only the dataset folder is left behind: no zip, no temporary folders.
    assert [p.name for p in settings.paths.datasets.iterdir()] == ["ml-latest-small"]
    # Second load is local: the server is not asked again.
    n = len(server.hits)
    again = load_dataset(settings, base_url=server.base_url)
    assert len(server.hits) == n
    assert again.interactions[schema.ITEM_ID].tolist() == tables.interactions[
        schema.ITEM_ID].tolist()


def test_pinned_md5_mismatch_is_refused(server: _Server, tmp_path: Path) -> None:
    # ml-100k has a pinned MD5; a zip with other content must not be accepted.
    blob = _zip_dir(write_ml100k(tmp_path / "zipsrc" / "ml-100k"), "ml-100k")
    server.files["/datasets/movielens/ml-100k.zip"] = blob
    datasets = tmp_path / "datasets"
    with pytest.raises(DownloadError, match="checksum mismatch") as err:
        download_dataset("ml-100k", datasets, base_url=server.base_url)
    assert FORMATS["ml-100k"].md5 in str(err.value)
    assert "--data-root" in str(err.value)
    assert not (datasets / "ml-100k").exists()
    assert list(datasets.iterdir()) == []  # the bad file was discarded


def test_md5_file_mismatch_is_refused(server: _Server, tmp_path: Path) -> None:
    server.files["/datasets/movielens/ml-latest-small.zip"] = _latest_zip(tmp_path)
    server.files["/datasets/movielens/ml-latest-small.zip.md5"] = b"0" * 32 + b"  x.zip\n"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_dataset("ml-latest-small", tmp_path / "ds", base_url=server.base_url)
    assert not (tmp_path / "ds" / "ml-latest-small").exists()


def test_missing_md5_file_fails(server: _Server, tmp_path: Path) -> None:
    server.files["/datasets/movielens/ml-latest-small.zip"] = _latest_zip(tmp_path)
    with pytest.raises(DownloadError, match="404"):
        download_dataset("ml-latest-small", tmp_path / "ds", base_url=server.base_url)


def test_unreachable_host_says_how_to_use_a_local_copy(tmp_path: Path, settings) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError) as err:
        load_dataset(settings.model_copy(update={"data": settings.data.model_copy(
            update={"dataset": "ml-1m"})}), base_url=f"http://127.0.0.1:{port}/x")
    msg = str(err.value)
    assert "could not download ml-1m" in msg and "--data-root" in msg
    assert "RECOPS_DATA__ROOT" in msg


def test_zip_slip_is_refused(server: _Server, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-latest-small/ratings.csv", "userId,movieId,rating,timestamp\n")
        zf.writestr("../../evil.txt", "gotcha")
    blob = buf.getvalue()
    server.files["/datasets/movielens/ml-latest-small.zip"] = blob
    server.files["/datasets/movielens/ml-latest-small.zip.md5"] = _md5(blob).encode()
    with pytest.raises(DownloadError, match="outside"):
        download_dataset("ml-latest-small", tmp_path / "ds", base_url=server.base_url)
    assert not (tmp_path / "evil.txt").exists()


def test_zip_bomb_is_refused(server: _Server, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(movielens_fetch, "MAX_UNPACKED_BYTES", 1000)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ml-latest-small/ratings.csv", "0" * 5000)  # compresses to a few bytes
    blob = buf.getvalue()
    server.files["/datasets/movielens/ml-latest-small.zip"] = blob
    server.files["/datasets/movielens/ml-latest-small.zip.md5"] = _md5(blob).encode()
    with pytest.raises(DownloadError, match="would unpack to"):
        download_dataset("ml-latest-small", tmp_path / "ds", base_url=server.base_url)
    assert not (tmp_path / "ds" / "ml-latest-small").exists()


def test_not_a_zip_and_wrong_content(server: _Server, tmp_path: Path) -> None:
    junk = b"<html>maintenance</html>"
    server.files["/datasets/movielens/ml-latest-small.zip"] = junk
    server.files["/datasets/movielens/ml-latest-small.zip.md5"] = _md5(junk).encode()
    with pytest.raises(DownloadError, match="not a valid zip"):
        download_dataset("ml-latest-small", tmp_path / "ds", base_url=server.base_url)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("README.txt", "nothing here")
    blob = buf.getvalue()
    server.files["/datasets/movielens/ml-latest-small.zip"] = blob
    server.files["/datasets/movielens/ml-latest-small.zip.md5"] = _md5(blob).encode()
    with pytest.raises(DownloadError, match="does not contain ml-latest-small/ratings.csv"):
        download_dataset("ml-latest-small", tmp_path / "ds", base_url=server.base_url)


@pytest.mark.parametrize("text", ["MD5 (ml-1m.zip) = C4D9EECFCA2AB87C1945AFE126590906\n",
                                  "c4d9eecfca2ab87c1945afe126590906  ml-1m.zip\n"])
def test_parse_md5_file(text: str) -> None:
    assert parse_md5_file(text, "ml-1m.zip") == "c4d9eecfca2ab87c1945afe126590906"


def test_parse_md5_file_garbage() -> None:
    with pytest.raises(DownloadError, match="no MD5"):
        parse_md5_file("<html>not found</html>", "ml-1m.zip")
