"""Training curves as a PNG (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_file


def plot_curves(losses: list, history: list, metric: str, path: Path, title: str = "") -> None:
    """Training loss per step (raw and smoothed) and validation loss/metric per evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    if losses:
        steps, values = zip(*losses)
        left.plot(steps, values, color="#9ecae1", linewidth=0.8, label="train loss (per step)")
        window = max(1, len(values) // 25)
        smooth = [sum(values[max(0, i - window + 1):i + 1]) / len(values[max(0, i - window + 1):i + 1]) for i in range(len(values))]
        left.plot(steps, smooth, color="#08519c", linewidth=1.5, label=f"train loss (mean of {window})")
    val_steps = [h["step"] for h in history]
    if history:
        left.plot(val_steps, [h["val"]["loss"] for h in history], "o-", color="#e6550d", label="validation loss")
        key = metric
        right.plot(val_steps, [h["val"][key] for h in history], "o-", color="#31a354", label=f"validation {key}")
        right.set_ylabel(key)
        right.legend(loc="lower right")
    else:
        right.text(0.5, 0.5, "no validation data", ha="center", va="center", transform=right.transAxes)
    left.set_xlabel("optimizer step")
    left.set_ylabel("loss")
    left.legend(loc="upper right")
    right.set_xlabel("optimizer step")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
