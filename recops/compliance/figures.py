"""The report's figures: each plot's series as read from the records, drawn to a PNG."""

from __future__ import annotations

import base64
import io
from typing import Any

from recops.compliance.report_data import Figure, ReportData

METRICS = ("hr@10", "ndcg@10", "mrr", "coverage@10")


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
