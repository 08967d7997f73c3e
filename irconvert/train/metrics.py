"""Accuracy, the per-epoch ``metrics.jsonl`` log and its plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from irconvert.atomic import write_bytes

__all__ = ["correct_topk", "plot_curves", "write_jsonl"]


def correct_topk(logits: Tensor, targets: Tensor, ks: Sequence[int] = (1, 5)) -> list[int]:
    """How many of ``targets`` are in the top-k of ``logits``, for each k."""
    maxk = min(max(ks), logits.shape[1])
    top = logits.topk(maxk, dim=1).indices
    hit = top.eq(targets.view(-1, 1))
    return [int(hit[:, : min(k, maxk)].any(dim=1).sum()) for k in ks]


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Rewrite the whole log atomically (it is small), one JSON object a line."""
    write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())


def plot_curves(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Loss, top-1 and lr / EDE t against epoch, as one PNG (matplotlib Agg)."""
    import io
    import itertools

    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    if not rows:
        return
    epochs = [r["epoch"] + 1 for r in rows]
    fig = Figure(figsize=(12, 3.5), dpi=100)
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], label="train")
    ev = [r for r in rows if r.get("val_loss") is not None]
    ax_loss.plot([r["epoch"] + 1 for r in ev], [r["val_loss"] for r in ev], label="val")
    ax_loss.set_title("loss")
    ax_acc.plot(epochs, [r["train_top1"] for r in rows], label="train top-1")
    ax_acc.plot([r["epoch"] + 1 for r in ev], [r["val_top1"] for r in ev], label="val top-1")
    ax_acc.set_title("accuracy (%)")
    ax_lr.plot(epochs, [r["lr"] for r in rows], label="lr")
    ax_lr.set_title("learning rate / EDE t")
    ax_t = ax_lr.twinx()
    ax_t.plot(epochs, [r["t"] for r in rows], color="tab:red", label="t")
    ax_t.set_yscale("log")
    ax_t.legend(loc="center right", fontsize="small")
    # staged recipes: a dotted line where each new stage starts, named on the accuracy plot
    for prev, row in itertools.pairwise(rows):
        if row.get("stage") != prev.get("stage"):
            for ax in (ax_loss, ax_acc, ax_lr):
                ax.axvline(row["epoch"] + 0.5, color="grey", linestyle=":", linewidth=1)
            ax_acc.annotate(str(row["stage"]), (row["epoch"] + 0.5, 0.02),
                            xycoords=("data", "axes fraction"), fontsize="small", color="grey")
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.set_xlabel("epoch")
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_bytes(path, buf.getvalue())
