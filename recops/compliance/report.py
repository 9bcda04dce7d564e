"""The compliance report of one registered model: a self-contained HTML page built from records.

Every number and every plotted point is read from a record (registry metadata, the run
directory, the privacy ledger, the lake's logs, the quarantine area, the audit log); nothing is
retyped. The plotted series travel with the page as JSON (``<script id="recops-figures">``)
and as tables under each figure, so a reviewer (and the tests) can check a plot against its data.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops import schema
from recops.compliance.audit import AuditLog, ChainStatus, verify
from recops.errors import AuditError, ConfigError, DataError, RegistryError
from recops.hashing import sha256_file

if TYPE_CHECKING:
    from recops.config import Settings

TEMPLATE = "report.html.j2"
METRICS = ("hr@10", "ndcg@10", "mrr", "coverage@10")
RUN_FILES = ("validation.json", "features.json", "train.json", "history.json", "privacy.json",
             "federated_rounds.json", "metrics.json", "gate.json", "register.json")


@dataclass
class Figure:
    """One plot: what it shows, the series it was drawn from, and the PNG (base64)."""

    key: str
    title: str
    caption: str
    x_label: str
    series: dict[str, list[Any]]  # "x" and one list per line/bar, as read from the records
    png: str = ""


@dataclass
class ReportData:
    """Everything the template shows, gathered from the records."""

    tag: str
    metadata: dict[str, Any]
    run_id: str
    run_dir: Path
    champion: bool
    generated_at: str
    chain: ChainStatus
    run_files: dict[str, Any]
    missing_files: list[str]
    run_records: list[dict[str, Any]]
    lake: dict[str, list[dict[str, Any]]]
    superseded: list[dict[str, Any]]
    quarantined: list[dict[str, Any]]
    ledger: list[dict[str, Any]]
    privacy_total: dict[str, Any]
    privacy_words: list[str]
    segment_gap: dict[str, Any] | None
    retrain: dict[str, Any] | None
    figures: list[Figure] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Gathering


MISSING = object()  # a record file that is absent (a file holding JSON null is "recorded: none")


def _read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"run record {path} is unreadable ({exc}); the report cannot vouch for "
                        "it: restore the file or rerun the stage that writes it") from exc


def _resolve_tag(settings: Settings, tag: str | None, run_id: str | None) -> str:
    from recops.release import registry

    if tag is None and run_id is not None:
        reg = _read_json(settings.paths.runs / run_id / "register.json")
        if not reg or not reg.get("tag"):
            raise RegistryError(f"run {run_id} registered no model (no register.json under "
                                f"{settings.paths.runs / run_id}): nothing to report on")
        tag = reg["tag"]
    return registry.resolve(settings, tag or registry.CHAMPION)


def _quarantined(settings: Settings) -> list[dict[str, Any]]:
    """Every quarantined batch's metadata (validation's ``meta.json``), oldest first."""
    root = settings.paths.quarantine
    out = []
    if root.is_dir():
        for d in sorted(root.iterdir()):
            meta = d / "meta.json"
            if meta.is_file():
                m = _read_json(meta) or {}
                m["path"] = str(d)
                m["reason_file"] = str(d / "REASON.txt") if (d / "REASON.txt").is_file() else None
                out.append(m)
    return sorted(out, key=lambda m: str(m.get("created_at")))


def _lake(settings: Settings) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    from recops.lake import SUPERSEDE, Lake

    lake = Lake(settings.paths.lake)
    tables, superseded = {}, []
    for table in schema.TABLES:
        tables[table] = [asdict(b) for b in lake.batches(table)]
        superseded += [e for e in lake.log_entries(table) if e.get("op") == SUPERSEDE]
    return tables, superseded


def _privacy(settings: Settings, meta: dict[str, Any]) -> tuple[list[dict], dict[str, Any]]:
    from recops.training.privacy import PrivacyLedger, default_population

    spend = meta.get("privacy") or {}
    recorded_total = meta.get("privacy_total") or {}
    population = (spend.get("population") or recorded_total.get("population")
                  or default_population(settings))
    ledger = PrivacyLedger(settings.paths.privacy_ledger)
    entries = [s.to_dict() for s in ledger.entries(population)]
    eps = sum(e["epsilon"] for e in entries)
    delta = sum(e["delta"] for e in entries)
    budget = (meta.get("config") or {}).get("privacy", {}).get("budget_epsilon",
                                                                settings.privacy.budget_epsilon)
    upto = _spent_upto(entries, meta.get("run_id"))
    return entries, {"population": population, "epsilon_now": eps, "delta_now": delta,
                     "epsilon_at_model": upto, "budget_epsilon": budget,
                     "recorded": recorded_total, "runs": len({e.get("run_id") for e in entries}),
                     "left_now": budget - eps}


def _spent_upto(entries: list[dict[str, Any]], run_id: str | None) -> float | None:
    """ε charged to the population up to and including this model's run (None if not in it)."""
    idx = [i for i, e in enumerate(entries) if e.get("run_id") == run_id]
    return sum(e["epsilon"] for e in entries[: idx[-1] + 1]) if idx else None


def privacy_in_words(meta: dict[str, Any], total: dict[str, Any]) -> list[str]:
    """The guarantee as a reviewer would say it, every figure from the spend record."""
    spend = meta.get("privacy")
    if not spend:
        return ["This model was trained without differential privacy: it carries no formal "
                "guarantee about what it reveals of any one person's data."]
    parts = []
    for name, comp in ((spend.get("components") or {"": spend}).items()):
        unit = comp.get("unit", "user")
        who = ("one user (everything that user did: all of their events)" if unit == "user"
               else "one client (a whole group of users held by one participant)")
        eps, delta = float(comp["epsilon"]), float(comp["delta"])
        label = f" [{name.replace('_', '-')}]" if name else ""
        parts.append(
            f"Differential privacy{label}: adding or removing {who} changes the probability "
            f"of any outcome of training by at most a factor e^ε = {math.exp(eps):.3g} "
            f"(ε = {eps:.4g}), except with probability δ = {delta:.3g}. Mechanism "
            f"{comp.get('mechanism')}, accountant {str(comp.get('accountant')).upper()}, noise "
            f"multiplier σ = {float(comp['noise_multiplier']):.4g}, clipping norm "
            f"{float(comp['max_grad_norm']):.4g}, sampling rate {float(comp['sample_rate']):.4g}, "
            f"{comp.get('steps')} steps over {comp.get('epochs')} epoch(s)/round(s).")
    budget = total["budget_epsilon"]
    parts.append(
        f"Across all {total['runs']} run(s) and retraining cycles charged to population "
        f"'{total['population']}', the ledger sums to ε = {total['epsilon_now']:.4g} "
        f"(δ = {total['delta_now']:.3g}) by basic composition, against a budget of ε = "
        f"{budget:.4g}: {'within' if total['epsilon_now'] <= budget + 1e-9 else 'OVER'} budget, "
        f"ε = {total['left_now']:.4g} left.")
    return parts


def segment_gap(per_segment: dict[str, dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """The best and worst segment on ``metric`` and the gap between them."""
    vals = {seg: float(m[metric]) for seg, m in (per_segment or {}).items()
            if isinstance(m, dict) and m.get(metric) is not None
            and math.isfinite(float(m[metric]))}
    if len(vals) < 2:
        return None
    best = max(vals, key=vals.__getitem__)
    worst = min(vals, key=vals.__getitem__)
    return {"metric": metric, "best": best, "best_value": vals[best], "worst": worst,
            "worst_value": vals[worst], "gap": vals[best] - vals[worst]}


def gather(settings: Settings, tag: str | None = None, *, run_id: str | None = None) -> ReportData:
    """Collect the records of one model (``tag``, the model of ``run_id``, or the champion)."""
    from recops.compliance.subjects import retrain_required
    from recops.release import registry

    full = _resolve_tag(settings, tag, run_id)
    meta = registry.metadata(settings, full)
    rid = meta.get("run_id") or ""
    rdir = settings.paths.runs / rid
    read = {name: _read_json(rdir / name, MISSING) for name in RUN_FILES} if rid else {}
    missing = [n for n, v in read.items() if v is MISSING
               and not (n == "federated_rounds.json" and meta.get("training_mode") != "federated")]
    files = {n: (None if v is MISSING else v) for n, v in read.items()}
    log = AuditLog(settings.paths.audit_log)
    chain = verify(log)
    try:
        records = [r for r in log.records() if r.get("run_id") == rid or _mentions(r, full)]
    except AuditError:  # an unreadable log is reported through `chain`, not hidden
        records = []
    lake, superseded = _lake(settings)
    ledger, total = _privacy(settings, meta)
    gate_metric = ((meta.get("config") or {}).get("gate") or {}).get("metric", "ndcg@10")
    data = ReportData(
        tag=full, metadata=meta, run_id=rid, run_dir=rdir,
        champion=registry.champion_tag(settings) == full,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"), chain=chain,
        run_files=files, missing_files=missing, run_records=records, lake=lake,
        superseded=superseded, quarantined=_quarantined(settings), ledger=ledger,
        privacy_total=total, privacy_words=privacy_in_words(meta, total),
        segment_gap=segment_gap(meta.get("per_segment") or {}, gate_metric),
        retrain=retrain_required(settings).get(full))
    data.figures = figures(data)
    return data


def _mentions(record: dict[str, Any], tag: str) -> bool:
    return any(tag in json.dumps(record.get(k, {})) for k in ("inputs", "outputs"))


# ---------------------------------------------------------------------------------------------
# Figures


def figures(data: ReportData) -> list[Figure]:
    """The plots a reader would rather look at than read, each with the series it shows."""
    out: list[Figure] = []
    history = data.run_files.get("history.json") or []
    if history:
        keys = [k for k in ("loss", *METRICS) if any(k in row for row in history)]
        out.append(Figure(
            "training", "Training curves", "Training loss and validation metrics per "
            + ("round" if data.metadata.get("training_mode") == "federated" else "epoch")
            + " (history.json).", "round" if data.metadata.get("training_mode") == "federated"
            else "epoch",
            {"x": [row.get("epoch") for row in history],
             **{k: [row.get(k) for row in history] for k in keys}}))
    rounds = data.run_files.get("federated_rounds.json") or []
    if rounds:
        metric_keys = sorted({k for r in rounds for k in r if k.startswith("global_")})
        series = {"x": [r["round"] for r in rounds],
                  "participants": [r.get("participants") for r in rounds],
                  "sampled": [r.get("sampled") for r in rounds],
                  **{k: [r.get(k) for r in rounds] for k in metric_keys}}
        for level in ("client_level", "sample_level"):
            eps = [(r.get("epsilon") or {}).get(level) for r in rounds]
            if any(e is not None for e in eps):
                series[f"epsilon_{level}"] = eps
        out.append(Figure("federated", "Federated rounds", "Global validation metrics, "
                          "participating clients and ε spent after each round "
                          "(federated_rounds.json).", "round", series))
    if data.ledger:
        cum, run = [], 0.0
        for e in data.ledger:
            run += float(e["epsilon"])
            cum.append(run)
        out.append(Figure("epsilon", "Privacy spend over time", "Cumulative ε charged to "
                          f"population '{data.privacy_total['population']}' per ledger entry, "
                          "against the budget (privacy ledger).", "time",
                          {"x": [e["time"] for e in data.ledger],
                           "epsilon": [float(e["epsilon"]) for e in data.ledger],
                           "cumulative_epsilon": cum,
                           "budget_epsilon": [data.privacy_total["budget_epsilon"]] * len(cum),
                           "run_id": [e.get("run_id") for e in data.ledger]}))
    per_seg = data.metadata.get("per_segment") or {}
    segs = [s for s in sorted(per_seg) if isinstance(per_seg[s], dict)]
    if segs:
        keys = [k for k in METRICS if k != "coverage@10" and any(k in per_seg[s] for s in segs)]
        out.append(Figure("segments", "Quality per user segment", "Test metrics per user "
                          "segment (registry metadata, per_segment).", "segment",
                          {"x": segs, **{k: [per_seg[s].get(k) for s in segs] for k in keys}}))
    for fig in out:
        fig.png = _draw(fig)
    return out


def _num(values: list[Any]) -> list[float]:
    return [float("nan") if v is None else float(v) for v in values]


def _draw(fig: Figure) -> str:
    """Render a figure to a base64 PNG with matplotlib's object API (no pyplot global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    # Fixed margins, not a layout engine: constrained layout measured ~40% of the draw time.
    mfig = MplFigure(figsize=(7.5, 3.4), dpi=100)
    mfig.subplots_adjust(left=0.08, right=0.92, bottom=0.24, top=0.84, wspace=0.32)
    FigureCanvasAgg(mfig)
    s = fig.series
    if fig.key == "segments":
        ax = mfig.add_subplot()
        keys = [k for k in s if k != "x"]
        width = 0.8 / max(1, len(keys))
        for i, k in enumerate(keys):
            ax.bar([j + i * width for j in range(len(s["x"]))], _num(s[k]), width, label=k)
        ax.set_xticks([j + width * (len(keys) - 1) / 2 for j in range(len(s["x"]))], s["x"],
                      rotation=20, fontsize=8)
        ax.set_ylabel("metric")
        ax.legend(fontsize=8)
    elif fig.key == "epsilon":
        ax = mfig.add_subplot()
        xs = list(range(1, len(s["x"]) + 1))
        ax.step(xs, s["cumulative_epsilon"], where="post", marker="o", label="cumulative ε")
        ax.axhline(s["budget_epsilon"][0], color="tab:red", linestyle="--", label="budget")
        ax.set_xticks(xs, [str(t)[:16].replace("T", " ") for t in s["x"]], rotation=20,
                      fontsize=7)
        ax.set_ylabel("ε")
        ax.legend(fontsize=8)
    else:
        left, right = mfig.subplots(1, 2)
        first = "loss" if "loss" in s else ("participants" if "participants" in s else None)
        if first:
            left.plot(s["x"], _num(s[first]), marker="o", label=first)
            if "sampled" in s:
                left.plot(s["x"], _num(s["sampled"]), marker="x", linestyle=":", label="sampled")
            left.set_title(first, fontsize=9)
            left.legend(fontsize=8)
        for k in s:
            if k in ("x", "loss", "participants", "sampled") or k.startswith("epsilon"):
                continue
            right.plot(s["x"], _num(s[k]), marker=".", label=k.removeprefix("global_"))
        eps_keys = [k for k in s if k.startswith("epsilon")]
        if eps_keys:
            twin = right.twinx()
            for k in eps_keys:
                twin.plot(s["x"], _num(s[k]), color="tab:red", linestyle="--", label=k)
            twin.set_ylabel("ε", fontsize=8)
            twin.legend(fontsize=7, loc="lower right")
        right.set_title("validation metrics", fontsize=9)
        right.legend(fontsize=8, loc="upper left")
        from matplotlib.ticker import MaxNLocator

        for ax in (left, right):
            ax.set_xlabel(fig.x_label)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    mfig.suptitle(fig.title, fontsize=10)
    buf = io.BytesIO()
    # No timestamp in the PNG: the same records give the same bytes.
    mfig.savefig(buf, format="png", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


# ---------------------------------------------------------------------------------------------
# Rendering


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
    data = gather(settings, tag, run_id=run_id)
    page = render_html(data)
    path = Path(out) if out else report_path(settings, data.tag)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
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


# ---------------------------------------------------------------------------------------------
# Chromium (PDF, screenshots, the render check)


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
