"""What a training loop keeps from epoch to epoch, for both of ferlab's loops (the NumPy
:class:`~ferlab.nn.Solver` and the CNN trainer in :mod:`ferlab.deep.trainer`): the history, the
best epoch and its weights, early stopping, the epoch callback and the checkpoint's name.

Early stopping and the best epoch watch a *monitor*, a setting of each kind of training:

- ``val_loss`` (validation data loss, lower is better): the fully connected net's default
  (``solver.monitor``), whose validation accuracy moves in steps on small validation parts;
- ``val_acc`` (validation accuracy, higher is better): the CNN's default, the figure its model
  is chosen and reported by.

It sits in the engine (the lowest layer that trains) and imports nothing above it.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

MONITOR_NAMES = {"val_loss": "validation loss", "val_acc": "validation accuracy"}
# The monitor of each kind of training when its settings name none (see the module docstring).
DEFAULT_MONITOR = {"fully_connected": "val_loss", "cnn": "val_acc"}
# A checkpoint is ``checkpoint`` + its format's suffix (.npz for NumPy, .safetensors for the CNN).
CHECKPOINT_STEM = "checkpoint"
# Called after every epoch with the epoch's number (from 1) and the history so far.
EpochCallback = Callable[[int, dict], None]


def new_history(keys: Sequence[str]) -> dict[str, list]:
    """An empty history: one list per key, one value per epoch."""
    return {key: [] for key in keys}


def record_epoch(history: dict[str, list], keys: Sequence[str], values: Iterable[float]) -> None:
    """Append one epoch's ``values`` (in the order of ``keys``) to ``history`` as floats."""
    for key, value in zip(keys, values, strict=True):
        history[key].append(float(value))


def restored_history(stored: dict, keys: Sequence[str]) -> dict[str, list]:
    """A checkpoint's history under ``keys``; a key it lacks (written before that key was
    recorded) holds NaN for each epoch: unknown, not zero."""
    unknown = [float("nan")] * len(next(iter(stored.values()), []))
    return {key: list(stored.get(key, unknown)) for key in keys}


class BestEpoch:
    """Which epoch is best so far, the weights kept from it, and whether to stop early.

    ``monitor``: ``val_loss`` or ``val_acc``; ``patience``: epochs without improvement before
    stopping (None: never); ``keep_last``: every epoch counts as the best (a run that trains on
    its validation part, which cannot choose an epoch); ``kept``: the weights kept before any
    epoch (None: none). The score is stored lower-is-better (accuracy negated), so the first
    epoch always improves on the start.
    """

    def __init__(
        self, monitor: str, patience: int | None, *, keep_last: bool = False, kept: Any = None
    ) -> None:
        if monitor not in MONITOR_NAMES:
            raise ValueError(f"monitor must be one of {sorted(MONITOR_NAMES)}, got {monitor!r}")
        self.monitor = monitor
        self.patience = patience
        self.keep_last = keep_last
        self.kept = kept
        self.best_score = math.inf
        self.best_epoch = 0
        self.stopped_early = False

    def score(self, val_loss: float, val_acc: float) -> float:
        """The monitored value, lower is better."""
        return float(val_loss) if self.monitor == "val_loss" else -float(val_acc)

    def update(
        self, epoch: int, val_loss: float, val_acc: float, snapshot: Callable[[], Any]
    ) -> bool:
        """Take epoch ``epoch``'s validation figures: keep ``snapshot()`` when it is the best
        yet (and say so), else stop once ``patience`` epochs have passed without one."""
        score = self.score(val_loss, val_acc)
        if self.keep_last or score < self.best_score:
            self.best_score, self.best_epoch = score, epoch
            self.kept = snapshot()
            return True
        if self.patience is not None and epoch - self.best_epoch >= self.patience:
            self.stopped_early = True
        return False

    def stop_message(self) -> str:
        """The line that says why training stopped early."""
        return (
            f"early stop: no better {MONITOR_NAMES[self.monitor]} for {self.patience} epochs; "
            f"restoring epoch {self.best_epoch}"
        )

    def state(self) -> dict:
        """What a checkpoint stores of this (JSON; the kept weights are stored apart)."""
        return {
            "monitor": self.monitor,
            "best_score": self.best_score if math.isfinite(self.best_score) else None,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
        }

    def load(self, state: dict) -> None:
        """Restore what :meth:`state` returned (its ``monitor`` included)."""
        self.monitor = state["monitor"]
        best = state["best_score"]
        self.best_score = math.inf if best is None else float(best)
        self.best_epoch = int(state["best_epoch"])
        self.stopped_early = bool(state["stopped_early"])


class TrainingLoop:
    """What both training loops (the NumPy Solver, the CNN trainer) do alike around their
    epochs: run them until the last or early stopping, end each one (checkpoint, callback),
    explain Ctrl-C, resume, and tell their :class:`BestEpoch` (``self.best``).

    A loop sets ``best``, ``epoch`` (finished epochs), ``epochs`` (all), ``history``,
    ``verbose`` and ``epoch_callback``, and defines ``checkpoint_path`` (None: no checkpoint),
    ``train_one_epoch()``, ``train()``, ``save_checkpoint(path)`` and ``load_checkpoint(path)``.
    """

    best: BestEpoch
    epoch: int
    epochs: int
    history: dict[str, list]
    verbose: bool
    epoch_callback: EpochCallback | None
    checkpoint_path: Path | None

    def train_one_epoch(self) -> None:  # pragma: no cover - each loop defines it
        raise NotImplementedError

    def train(self) -> dict[str, list]:  # pragma: no cover - each loop defines it
        raise NotImplementedError

    def save_checkpoint(self, path: Path) -> Path:  # pragma: no cover - each loop defines it
        raise NotImplementedError

    def load_checkpoint(self, path: Path) -> None:  # pragma: no cover - each loop defines it
        raise NotImplementedError

    @property
    def finished(self) -> bool:
        """Whether the last epoch is done or early stopping ended the training."""
        return self.epoch >= self.epochs or self.best.stopped_early

    def run_epochs(self) -> None:
        """Train epoch after epoch until :attr:`finished`; on Ctrl-C say where the
        checkpoint is and how to continue, then stop."""
        try:
            while not self.finished:
                self.train_one_epoch()
        except KeyboardInterrupt:
            print(f"\n{interrupt_message(self.epoch, self.checkpoint_path)}", file=sys.stderr)
            raise

    def end_epoch(self) -> None:
        """After an epoch: write the checkpoint (when the loop keeps one), then call the
        epoch callback with the epoch's number and the history."""
        if self.checkpoint_path is not None:
            self.save_checkpoint(self.checkpoint_path)
        if self.epoch_callback is not None:
            self.epoch_callback(self.epoch, self.history)

    def resume(self, path: str | Path) -> dict[str, list]:
        """Load the checkpoint at ``path`` and train on to the result an uninterrupted run
        reaches; return the history."""
        self.load_checkpoint(Path(path))
        if self.verbose:
            print(
                f"resuming after epoch {self.epoch} of {self.epochs} from {path}", file=sys.stderr
            )
        return self.train()

    @property
    def monitor(self) -> str:
        """What early stopping and the best epoch watch (``val_loss`` or ``val_acc``)."""
        return self.best.monitor

    @property
    def best_epoch(self) -> int:
        """The epoch (from 1) whose weights are kept; 0 before the first."""
        return self.best.best_epoch

    @property
    def stopped_early(self) -> bool:
        """Whether early stopping ended the training."""
        return self.best.stopped_early


def interrupt_message(epoch: int, checkpoint: Path | None) -> str:
    """What to say when Ctrl-C stops training after ``epoch`` finished epochs: where the
    checkpoint is and how to continue, or that none was written."""
    if checkpoint is not None and epoch > 0:
        return (
            f"interrupted in epoch {epoch + 1}: the checkpoint of epoch {epoch} is {checkpoint}; "
            f"continue with --resume {checkpoint}"
        )
    return (
        f"interrupted in epoch {epoch + 1}: no checkpoint was written "
        "(set a checkpoint directory to keep one)"
    )
