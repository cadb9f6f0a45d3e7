"""Loss and metric curves of a training run (PNG)."""

from __future__ import annotations

from pathlib import Path

from dsmscale.report.figures import plt, save_figure


def plot_history(history: list[dict], path: Path) -> Path:
    """Train/val total loss (log scale) and validation metrics per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label in (("train_total", "train loss"), ("val_total", "val loss")):
        ax_loss.plot(epochs, [h[key] for h in history], label=label)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("epoch")
    ax_loss.legend()
    for key, label in (("val_obj_acc", "val object accuracy"), ("val_miou", "val mIoU")):
        if history and key in history[0]:
            ax_metric.plot(epochs, [h[key] for h in history], label=label)
    ax_metric.set_ylim(0, 1)
    ax_metric.set_xlabel("epoch")
    ax_metric.legend()
    return save_figure(fig, path, dpi=90)
