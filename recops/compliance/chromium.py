"""Headless Chromium for the report: print to PDF, take a screenshot, run the render check."""

from __future__ import annotations

import html
import shutil
import subprocess
import tempfile
from pathlib import Path

from recops.errors import ConfigError


def chromium() -> str | None:
    """The headless Chromium binary on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--disable-default-apps", "--disable-extensions", "--mute-audio")


def run_chromium(args: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with a throwaway profile; raises ConfigError when it is absent."""
    exe = chromium()
    if exe is None:
        raise ConfigError("headless Chromium is not installed (needed for PDF and screenshots): "
                          "apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="recops-chromium-") as profile:
        return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout, check=False)


def print_pdf(html_path: Path, pdf_path: Path) -> Path:
    """Print the HTML report to PDF with headless Chromium (no Python PDF library needed)."""
    proc = run_chromium(["--no-pdf-header-footer", f"--print-to-pdf={pdf_path}",
                         Path(html_path).resolve().as_uri()])
    if not pdf_path.is_file() or pdf_path.stat().st_size == 0:
        raise ConfigError(f"Chromium could not print {html_path} to PDF (exit "
                          f"{proc.returncode}): {html.escape(proc.stderr[-500:])}")
    return pdf_path


def screenshot(html_path: Path, png_path: Path, size: str = "1200,2400") -> Path:
    """A PNG of the report as Chromium draws it."""
    png_path.parent.mkdir(parents=True, exist_ok=True)
    proc = run_chromium([f"--screenshot={png_path}", f"--window-size={size}",
                         "--hide-scrollbars", Path(html_path).resolve().as_uri()])
    if not png_path.is_file():
        raise ConfigError(f"Chromium could not screenshot {html_path} (exit {proc.returncode})")
    return png_path
