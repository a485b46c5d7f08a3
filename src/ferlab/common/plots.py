"""Training curves as PNG files, drawn on matplotlib figures that touch no global state."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure

from ferlab.common.files import atomic_path


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """Write a matplotlib figure atomically, in the format its suffix names (PNG by default)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    return path


def _mark_best(ax, best_epoch: int | None) -> None:
    if best_epoch:
        ax.axvline(
            best_epoch, color="0.4", linestyle="--", linewidth=1, label=f"best epoch {best_epoch}"
        )


def plot_history(
    history: dict, out_dir: str | Path, *, title: str = "", best_epoch: int | None = None
) -> list[Path]:
    """Write ``loss.png`` and ``accuracy.png`` from a training history; return their paths.

    The loss plot sets the training data loss beside the validation loss (both without the L2
    term); when the history has an L2 term (``train_l2``), it is drawn in a panel of its own.
    ``best_epoch`` (1-based) is marked, and ``title`` (e.g. the run's name) heads both plots.
    """
    out_dir = Path(out_dir)
    epochs = list(range(1, len(history["train_loss"]) + 1))
    l2 = history.get("train_l2") or [0.0] * len(epochs)
    has_l2 = any(v > 0 for v in l2 if not math.isnan(v))
    data_loss = [
        t - (0.0 if math.isnan(r) else r) for t, r in zip(history["train_loss"], l2, strict=True)
    ]

    fig = Figure(figsize=(6.5, 6.5 if has_l2 else 4.2))
    axes = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1]) if has_l2 else [fig.subplots()]
    ax = axes[0]
    ax.plot(epochs, data_loss, marker="o", markersize=3, label="training data loss")
    ax.plot(epochs, history["val_loss"], marker="o", markersize=3, label="validation loss")
    ax.set_ylabel("cross-entropy (without L2)")
    if has_l2:
        axes[1].plot(epochs, l2, color="tab:green", marker="o", markersize=3, label="L2 term")
        axes[1].set_ylabel("L2 term")
    for panel in axes:
        _mark_best(panel, best_epoch)
        panel.grid(alpha=0.3)
        panel.legend()
    axes[-1].set_xlabel("epoch")
    if title:
        fig.suptitle(f"{title}: loss")
    fig.tight_layout()
    paths = [out_dir / "loss.png"]
    save_figure(fig, paths[0])

    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    ax.plot(
        epochs, [100 * a for a in history["train_acc"]], marker="o", markersize=3, label="training"
    )
    ax.plot(
        epochs, [100 * a for a in history["val_acc"]], marker="o", markersize=3, label="validation"
    )
    _mark_best(ax, best_epoch)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(f"{title}: accuracy")
    fig.tight_layout()
    paths.append(out_dir / "accuracy.png")
    save_figure(fig, paths[1])
    return paths


def plot_emotion_timeline(
    series: dict[int, list[tuple[float, dict[str, float]]]],
    class_names: list[str],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """Write a PNG of each face track's emotion probabilities over time, one panel per track.

    ``series`` maps a track id to its (time in seconds, {class: probability}) points in time
    order; every class of ``class_names`` gets a line.
    """
    tracks = sorted(series)
    fig = Figure(figsize=(7.5, 1.2 + 1.6 * max(1, len(tracks))))
    axes = fig.subplots(max(1, len(tracks)), 1, sharex=True, squeeze=False)[:, 0]
    for ax, track in zip(axes, tracks, strict=False):
        times = [t for t, _ in series[track]]
        for name in class_names:
            ax.plot(times, [p.get(name, 0.0) for _, p in series[track]], label=name)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"track {track}")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper right", ncol=min(4, len(class_names)), fontsize="small")
    axes[-1].set_xlabel("time (s)")
    fig.suptitle(f"{title}: emotions per face track" if title else "emotions per face track")
    fig.tight_layout()
    return save_figure(fig, path)
