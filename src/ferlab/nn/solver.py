"""Mini-batch training with learning-rate decay, early stopping, best-model restore and checkpoints."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ferlab.common.progress import show_bars
from ferlab.errors import DataError, TrainingDiverged
from ferlab.evaluation.metrics import percent
from ferlab.nn import checkpoint
from ferlab.nn.checkpoint import CHECKPOINT_NAME
from ferlab.nn.layers import softmax_loss
from ferlab.nn.optim import get_update_rule
from ferlab.nn.settings import SolverSettings, checked
from ferlab.nn.tracking import (
    BestEpoch,
    EpochCallback,
    TrainingLoop,
    new_history,
    record_epoch,
)

__all__ = [
    "CHECKPOINT_NAME",
    "HISTORY_KEYS",
    "EpochCallback",
    "Solver",
    "random_shift",
    "validate_data",
]
# train_loss is the objective (data loss + L2 term); train_l2 is its L2 part, so that the data
# loss compares with val_loss (a data loss alone).
HISTORY_KEYS = ("train_loss", "train_l2", "train_acc", "val_loss", "val_acc", "lr", "seconds")


def validate_data(data: dict, input_dim: int, num_classes: int) -> None:
    """Reject training data that cannot fit the model, with a message that says what is wrong."""
    for part in ("train", "val"):
        X, y = data.get(f"X_{part}"), data.get(f"y_{part}")
        if X is None or y is None:
            raise DataError(f"data needs X_{part} and y_{part}")
        if len(X) == 0:
            raise DataError(f"X_{part} is empty")
        if len(X) != len(y):
            raise DataError(f"X_{part} has {len(X)} rows but y_{part} has {len(y)} labels")
        features = int(np.prod(X.shape[1:]))
        if features != input_dim:
            raise DataError(
                f"X_{part} has {features} features per sample; the model expects {input_dim}"
            )
        y_arr = np.asarray(y)
        if not np.issubdtype(y_arr.dtype, np.integer):
            raise DataError(f"y_{part} must hold integer class labels, got dtype {y_arr.dtype}")
        if y_arr.min() < 0 or y_arr.max() >= num_classes:
            raise DataError(
                f"y_{part} has labels outside [0, {num_classes}): "
                f"min {y_arr.min()}, max {y_arr.max()}"
            )


class Solver(TrainingLoop):
    """Trains a model such as :class:`FullyConnectedNet` on ``X_train, y_train, X_val, y_val``."""

    def __init__(
        self,
        model,
        data: dict,
        *,
        optimizer: str = SolverSettings.optimizer,
        lr: float = SolverSettings.lr,
        momentum: float = SolverSettings.momentum,
        lr_decay: float = SolverSettings.lr_decay,
        batch_size: int = SolverSettings.batch_size,
        epochs: int = SolverSettings.epochs,
        patience: int | None = SolverSettings.patience,
        seed: int = 0,
        checkpoint_dir: str | os.PathLike | None = None,
        verbose: bool = True,
        image_shape: tuple[int, ...] | None = None,
        flip: bool = SolverSettings.flip,
        shift: int = SolverSettings.shift,
        epoch_callback: EpochCallback | None = None,
        restore_best: bool | None = None,
        monitor: str = SolverSettings.monitor,
    ) -> None:
        self.settings: SolverSettings = checked(
            SolverSettings, "Solver", optimizer=optimizer, lr=lr, momentum=momentum,
            lr_decay=lr_decay, batch_size=batch_size, epochs=epochs, patience=patience,
            flip=flip, shift=shift, monitor=monitor,
        )  # fmt: skip
        validate_data(data, model.input_dim, model.num_classes)
        self.model = model
        self.update_rule = get_update_rule(optimizer)
        self.optimizer = optimizer
        self.X_train = np.ascontiguousarray(data["X_train"], dtype=model.dtype)
        self.X_train = self.X_train.reshape(len(self.X_train), -1)
        self.y_train = np.asarray(data["y_train"], dtype=np.int64)
        self.X_val = np.ascontiguousarray(data["X_val"], dtype=model.dtype)
        self.y_val = np.asarray(data["y_val"], dtype=np.int64)
        self.optim_config = {"lr": float(lr), "momentum": float(momentum)}
        self.lr_decay = float(lr_decay)
        self.batch_size = int(batch_size)
        self.epochs = int(epochs)
        self.patience = patience
        self.seed = seed
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.verbose = verbose
        if (flip or shift) and not image_shape:
            raise ValueError("flip and shift augmentation need the image_shape of a sample")
        self.image_shape = tuple(image_shape) if image_shape else None
        self.flip = bool(flip)
        self.shift = int(shift)
        self.epoch_callback = epoch_callback
        # Restoring the best-validation parameters belongs to early stopping unless asked for.
        self.restore_best = patience is not None if restore_best is None else restore_best
        self.rng = np.random.default_rng(seed)
        self.optim_state: dict[str, dict] = {name: {} for name in model.params}
        self.history: dict[str, list] = new_history(HISTORY_KEYS)
        self.epoch = 0
        # The best epoch, its parameters (best.kept) and early stopping, watching ``monitor``.
        self.best = BestEpoch(monitor, patience)

    @property
    def checkpoint_path(self) -> Path | None:
        """The checkpoint written after every epoch (None without a checkpoint_dir)."""
        return None if self.checkpoint_dir is None else self.checkpoint_dir / CHECKPOINT_NAME

    @classmethod
    def from_settings(cls, model, data: dict, settings: SolverSettings, **runtime: Any) -> Solver:
        """A Solver of ``settings``; ``runtime`` holds the rest (seed, checkpoint_dir, verbose,
        image_shape, epoch_callback, restore_best)."""
        return cls(model, data, **dataclasses.asdict(settings), **runtime)

    # -- training -----------------------------------------------------------------------------

    def augment(self, X_batch: np.ndarray) -> None:
        """Mirror a random half of the images left-right and shift each one, in place."""
        images = X_batch.reshape(len(X_batch), *self.image_shape)
        if self.flip:
            flip_mask = self.rng.random(len(X_batch)) < 0.5
            images[flip_mask] = images[flip_mask, :, ::-1]
        if self.shift:
            images[...] = random_shift(images, self.shift, self.rng)

    def _step(self, X_batch: np.ndarray, y_batch: np.ndarray) -> tuple[float, float, int]:
        data_loss, l2, grads, scores = self.model.loss_and_scores(X_batch, y_batch, self.rng)
        for name, w in self.model.params.items():
            if self.model.trainable.get(name, True):
                self.update_rule(w, grads[name], self.optim_state[name], self.optim_config)
        return data_loss + l2, l2, int((scores.argmax(axis=1) == y_batch).sum())

    def _run_epoch(self) -> tuple[float, float, float]:
        n = len(self.X_train)
        order = self.rng.permutation(n)
        batch_buffer = np.empty((self.batch_size, self.X_train.shape[1]), dtype=self.model.dtype)
        total_loss, total_l2, total_correct = 0.0, 0.0, 0
        starts = range(0, n, self.batch_size)
        bar = tqdm(
            starts,
            desc=f"epoch {self.epoch + 1}/{self.epochs}",
            unit="batch",
            leave=False,
            disable=not show_bars(self.verbose),
            file=sys.stderr,
        )
        for start in bar:
            idx = order[start : start + self.batch_size]
            X_batch = np.take(self.X_train, idx, axis=0, out=batch_buffer[: len(idx)])
            y_batch = self.y_train[idx]
            if self.flip or self.shift:
                self.augment(X_batch)
            loss, l2, correct = self._step(X_batch, y_batch)
            if not np.isfinite(loss):
                raise TrainingDiverged(
                    f"the loss became {loss} in epoch {self.epoch + 1}; "
                    f"try a lower learning rate (now {self.optim_config['lr']:g})"
                )
            total_loss += loss * len(idx)
            total_l2 += l2 * len(idx)
            total_correct += correct
        return total_loss / n, total_l2 / n, total_correct / n

    def evaluate(self, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """Test-mode data loss and accuracy on (X, y)."""
        scores = self.model.scores(X)
        loss, _ = softmax_loss(scores.astype(np.float64), y)
        return loss, float((scores.argmax(axis=1) == y).mean())

    def train(self) -> dict[str, list]:
        """Train until ``epochs`` or early stopping; restore the best parameters; return the history."""
        # Overflow shows up as a non-finite loss, reported with advice (train_one_epoch).
        with np.errstate(over="ignore", invalid="ignore"):
            self.run_epochs()
        if self.restore_best and self.best.kept is not None:
            for name, value in self.best.kept.items():
                self.model.params[name][...] = value
        return self.history

    def train_one_epoch(self) -> None:
        """One epoch: a pass over the shuffled training data, validation, the best epoch,
        the lr decay, the epoch's line and :meth:`end_epoch`."""
        started = time.perf_counter()
        lr = self.optim_config["lr"]
        train_loss, train_l2, train_acc = self._run_epoch()
        val_loss, val_acc = self.evaluate(self.X_val, self.y_val)
        self.epoch += 1
        seconds = time.perf_counter() - started
        values = (train_loss, train_l2, train_acc, val_loss, val_acc, lr, seconds)
        record_epoch(self.history, HISTORY_KEYS, values)
        self.best.update(self.epoch, val_loss, val_acc, self._copy_params)
        self.optim_config["lr"] = lr * self.lr_decay
        if self.verbose:
            tqdm.write(
                f"epoch {self.epoch}/{self.epochs}  loss {train_loss:.4f}  train acc {percent(train_acc)}"
                f"  val loss {val_loss:.4f}  val acc {percent(val_acc)}  lr {lr:.3g}"
                f"  {self.history['seconds'][-1]:.1f}s",
                file=sys.stderr,
            )
            if self.stopped_early:
                tqdm.write(self.best.stop_message(), file=sys.stderr)
        self.end_epoch()

    def _copy_params(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.model.params.items()}

    # -- checkpoints (ferlab.nn.checkpoint) ------------------------------------------------

    def save_checkpoint(self, path: str | os.PathLike) -> Path:
        """Write parameters, optimizer and rng state and history atomically to ``path``."""
        return checkpoint.save_checkpoint(self, path)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore the state written by :meth:`save_checkpoint` into this solver and its model."""
        checkpoint.load_checkpoint(self, path, HISTORY_KEYS)


def random_shift(images: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Each image (N, H, W[, C]) moved by up to ``max_shift`` pixels each way, zero-filled."""
    n, height, width = images.shape[:3]
    pad = [(0, 0), (max_shift, max_shift), (max_shift, max_shift)] + [(0, 0)] * (images.ndim - 3)
    padded = np.pad(images, pad)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (height, width), axis=(1, 2))
    offsets = rng.integers(0, 2 * max_shift + 1, size=(2, n))
    shifted = windows[np.arange(n), offsets[0], offsets[1]]
    # sliding_window_view puts the window axes last; move channels back behind them.
    return np.moveaxis(shifted, 1, -1) if images.ndim == 4 else shifted
