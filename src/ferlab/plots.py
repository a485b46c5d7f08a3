"""Training curves as PNG files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_history(history: dict, out_dir: str | Path) -> list[Path]:
    """Write ``loss.png`` and ``accuracy.png`` from a training history; return their paths."""
    out_dir = Path(out_dir)
    epochs = range(1, len(history["train_loss"]) + 1)
    paths = []
    for name, keys, label in (
        ("loss.png", ("train_loss", "val_loss"), "loss"),
        ("accuracy.png", ("train_acc", "val_acc"), "accuracy"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in keys:
            ax.plot(epochs, history[key], marker="o", markersize=3, label=key.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        paths.append(out_dir / name)
    return paths
