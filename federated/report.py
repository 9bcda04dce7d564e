"""Per-round figures of a federated run: a rich table and a PNG plot from federated_rounds.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.errors import DataError

if TYPE_CHECKING:
    from rich.table import Table


def read_rounds(path: Path) -> list[dict[str, Any]]:
    try:
        rows = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"no per-round metrics at {path}: the run did not start") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(rows, list):
        raise DataError(f"{path} must hold a list of rounds")
    return rows


def _eps(row: dict[str, Any]) -> str:
    e = row.get("epsilon") or {}
    parts = [f"{k.split('_')[0]} {v:.2f}" for k, v in e.items() if v is not None]
    return ", ".join(parts) or "-"


def rounds_table(rows: list[dict[str, Any]], title: str = "federated rounds") -> Table:
    from rich.table import Table

    table = Table(title=title)
    for col in ("round", "clients ok/sampled", "train loss", "NDCG@10", "HR@10", "ε so far",
                "wall s"):
        table.add_column(col, justify="right")
    for r in rows:
        loss = r.get("train_loss")
        table.add_row(str(r["round"]), f"{r['participants']}/{r['sampled']}",
                      "-" if loss is None else f"{loss:.4f}",
                      f"{r.get('global_ndcg@10', float('nan')):.4f}",
                      f"{r.get('global_hr@10', float('nan')):.4f}", _eps(r),
                      f"{r.get('wall_seconds', 0.0):.1f}")
    return table


def plot_rounds(rows: list[dict[str, Any]], out: Path, title: str = "") -> Path:
    """Global validation NDCG@10 and mean client train loss per round (two panels)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    rnd = [r["round"] for r in rows]
    ax1.plot(rnd, [r.get("global_ndcg@10") for r in rows], marker="o")
    ax1.set_xlabel("round")
    ax1.set_ylabel("NDCG@10 (global validation)")
    trained = [r for r in rows if r.get("train_loss") is not None]
    ax2.plot([r["round"] for r in trained], [r["train_loss"] for r in trained], marker="o",
             color="tab:orange")
    ax2.set_xlabel("round")
    ax2.set_ylabel("mean client train loss")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
