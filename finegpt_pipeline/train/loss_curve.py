"""The run's loss curves (train and val loss against tokens seen) as a PNG in its run directory.

Reads the `history` (train rows) and `val_history` (evaluations) that the trainer writes into
summary.json; a resumed run may hold the same step twice, the last record of a step wins.
"""

from __future__ import annotations

import io
from pathlib import Path

from finegpt_pipeline.atomic import write_bytes
from finegpt_pipeline.train.run_dir import SUMMARY_NAME, read_summary

LOSS_CURVE_NAME = "loss_curve.png"


def curve_points(rows: list[dict], key: str) -> list[tuple[float, float]]:
    """(tokens_seen, loss) per step, sorted by step, one point per step (the last record wins)."""
    by_iter = {int(r["iter"]): (float(r["tokens_seen"]), float(r[key]))
               for r in rows if key in r and "tokens_seen" in r}
    return [by_iter[i] for i in sorted(by_iter)]


def curves(summary: dict) -> dict[str, list[tuple[float, float]]]:
    """The run's train and val (tokens seen, loss) points from its summary.json content."""
    return {"train": curve_points(summary.get("history") or [], "train_loss"),
            "val": curve_points(summary.get("val_history") or [], "val_loss")}


def loss_curve_png(points: dict[str, list], title: str = "loss") -> bytes:
    """Train and val loss against tokens seen (`curves`), as PNG bytes (matplotlib's Agg
    backend); a labelled empty plot when there is no history (a bare nanoGPT checkpoint)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, val = points.get("train") or [], points.get("val") or []
    # 340 x 250 px: within the Dagster UI's metadata value column at a 1,400 px window
    # (the UI shows an image at its own size, cut where the column ends)
    with plt.rc_context({"font.size": 7.5, "axes.titlesize": 8}):
        fig, ax = plt.subplots(figsize=(3.4, 2.5), dpi=100)
        if train:
            ax.plot(*zip(*train), color="#3b7dd8", label="train loss")
        if val:
            ax.plot(*zip(*val), color="#d8593b", marker="o", markersize=3, label="val loss")
        if train or val:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no training history beside the checkpoint", ha="center",
                    va="center", transform=ax.transAxes)
        ax.set_xlabel("tokens seen")
        ax.set_ylabel("cross-entropy loss (nats)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
    return buf.getvalue()


def write_loss_curve(run_dir: str | Path) -> Path:
    """Write `loss_curve.png` beside the run's summary.json (atomically); return its path."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    if summary is None:
        raise ValueError(f"{run_dir / SUMMARY_NAME}: no readable run summary; "
                         "train the run to the end first")
    path = run_dir / LOSS_CURVE_NAME
    write_bytes(path, loss_curve_png(curves(summary),
                                     title=f"loss, run {run_dir.name} ({summary.get('steps', '?')} steps)"))
    return path
