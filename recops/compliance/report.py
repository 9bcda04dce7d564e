"""The compliance report of one registered model: a self-contained HTML page built from records.

Every number and every plotted point is read from a record (registry metadata, the run
directory, the privacy ledger, the lake's logs, the quarantine area, the audit log); nothing is
retyped. The plotted series travel with the page as JSON (``<script id="recops-figures">``)
and as tables under each figure, so a reviewer (and the tests) can check a plot against its data.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.compliance.chromium import print_pdf
from recops.compliance.figures import METRICS, figures
from recops.compliance.report_data import gather
from recops.core.atomic import write_atomic
from recops.core.audit import AuditLog
from recops.core.hashing import sha256_file

if TYPE_CHECKING:
    from recops.compliance.report_data import Figure, ReportData
    from recops.config import Settings

TEMPLATE = "report.html.j2"


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1:
        return str(int(value))  # counts (users, steps) arrive as floats from metric dicts
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value else f"{value:.{digits}f}"
    return str(value)


def _file_uri(path: str | Path | None) -> str | None:
    return Path(path).resolve().as_uri() if path else None


def _json_safe(v: Any) -> Any:
    # NaN/inf are not JSON: JSON.parse would fail in the browser. They print as null.
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _figure_json(figs: list[Figure]) -> str:
    blob = json.dumps({f.key: {k: [_json_safe(v) for v in vs] for k, vs in f.series.items()}
                       for f in figs}, default=str, allow_nan=False)
    # Safe inside <script>: no "</" can close the element early.
    return blob.replace("</", "<\\/")


def collect(settings: Settings, tag: str | None = None, *,
            run_id: str | None = None) -> ReportData:
    """The report's records (:func:`gather`) with the figures drawn from them."""
    data = gather(settings, tag, run_id=run_id)
    data.figures = figures(data)
    return data


def render_html(data: ReportData) -> str:
    """The report page: inline CSS, figures as data: URIs, nothing fetched from anywhere."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                      autoescape=select_autoescape(["html", "j2"]), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = _fmt
    env.filters["uri"] = _file_uri
    env.filters["pretty"] = lambda v: json.dumps(v, indent=1, sort_keys=True, default=str)
    meta = data.metadata
    return env.get_template(TEMPLATE).render(
        d=data, meta=meta, metrics=METRICS, figure_json=_figure_json(data.figures),
        gate=data.run_files.get("gate.json") or meta.get("gate") or {},
        validation=data.run_files.get("validation.json") or {},
        features=data.run_files.get("features.json") or {},
        train=data.run_files.get("train.json") or {},
        rounds=data.run_files.get("federated_rounds.json") or [],
        federated=meta.get("federated") or {})


def report_path(settings: Settings, tag: str) -> Path:
    return settings.paths.reports / (re.sub(r"[^A-Za-z0-9_.-]+", "_", tag) + ".html")


def build_report(settings: Settings, tag: str | None = None, *, run_id: str | None = None,
                 out: Path | None = None, pdf: bool = False) -> Path:
    """Write the report of ``tag`` (or of ``run_id``'s model, or the champion); returns its path.

    Appends a ``report`` audit record naming the page by content hash. With ``pdf``, also
    prints it to PDF with headless Chromium (next to the HTML).
    """
    started = time.perf_counter()
    data = collect(settings, tag, run_id=run_id)
    page = render_html(data)
    path = Path(out) if out else report_path(settings, data.tag)
    write_atomic(path, page)
    outputs: dict[str, Any] = {"html": str(path), "html_sha256": sha256_file(path)}
    if pdf:
        pdf_path = print_pdf(path, path.with_suffix(".pdf"))
        outputs.update(pdf=str(pdf_path), pdf_sha256=sha256_file(pdf_path))
    AuditLog(settings.paths.audit_log).append(
        "report", run_id=run_id or data.run_id, inputs={"tag": data.tag},
        outputs=outputs, details={"chain_ok": data.chain.ok, "chain_records": data.chain.records,
                                  "seconds": round(time.perf_counter() - started, 3),
                                  "missing_records": data.missing_files})
    return path
