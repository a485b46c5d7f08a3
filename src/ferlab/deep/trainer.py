"""The CNN's training loop: in-memory tensors, batch augmentation, best epoch and checkpoints."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ferlab.common.progress import show_bars
from ferlab.deep import checkpoint, distillation
from ferlab.deep.augment import center_crop, mix_batch, normalize, random_erase, random_warp
from ferlab.deep.checkpoint import CHECKPOINT_NAME, MODEL_NAME
from ferlab.deep.device import autocast, autocast_device, memory_format, prepare
from ferlab.deep.distillation import TeacherNetworks, TeacherViews
from ferlab.deep.ema import WeightAverage
from ferlab.deep.io import save_cnn
from ferlab.deep.losses import Targets, distillation_loss, mixed_cross_entropy
from ferlab.deep.schedule import make_optimizer, set_lr
from ferlab.errors import DataError, TrainingDiverged
from ferlab.evaluation.metrics import percent
from ferlab.nn.tracking import (
    BestEpoch,
    EpochCallback,
    TrainingLoop,
    new_history,
    record_epoch,
)
from ferlab.settings import CNNSettings

HISTORY_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


@dataclass
class TensorData:
    """Training and validation images (uint8, N x 48 x 48) and labels, on the training device."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor

    @classmethod
    def from_arrays(cls, train_images, train_labels, val_images, val_labels, device) -> TensorData:
        """Move numpy arrays to ``device`` once, so batches never leave it."""

        def tensor(array, dtype):
            return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype).to(device)

        return cls(
            tensor(train_images, torch.uint8),
            tensor(train_labels, torch.int64),
            tensor(val_images, torch.uint8),
            tensor(val_labels, torch.int64),
        )


class CNNTrainer(TrainingLoop):
    """Trains a network on :class:`TensorData` as ``settings`` (a CNN config) say; the best
    epoch's weights win.

    ``teachers``: CNNClassifiers whose mean logits the student learns (``distill``).
    """

    def __init__(
        self,
        settings: CNNSettings,
        module: torch.nn.Module,
        data: TensorData,
        mean: float,
        std: float,
        *,
        device: torch.device,
        out_dir: str | Path | None = None,
        meta: dict | None = None,
        verbose: bool = True,
        epoch_callback: EpochCallback | None = None,
        teachers=(),
    ) -> None:
        self.settings = settings
        self.teachers = list(teachers)
        self.solver = settings.solver
        self.augment = settings.augment
        self.device = device
        self.channels_last = bool(settings.device.channels_last)
        self.autocast_device = autocast_device(settings.device, device)
        self.teacher_runtime = distillation.teacher_runtime(device, self.autocast_device)
        self.teacher_networks = TeacherNetworks()
        self.module = module.to(device=device, memory_format=memory_format(self.channels_last))
        self.data = data
        self.mean, self.std = float(mean), float(std)
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.meta = meta
        self.verbose = verbose
        self.epoch_callback = epoch_callback
        self.generator = torch.Generator().manual_seed(int(settings.seed))
        self.optimizer = make_optimizer(self.module, self.solver)
        n = len(data.train_labels)
        if n == 0 or len(data.val_labels) == 0:
            raise DataError("the CNN needs training and validation samples")
        self.batch_size = min(int(self.solver.batch_size), n)
        self.steps_per_epoch = n // self.batch_size
        self.history: dict[str, list] = new_history(HISTORY_KEYS)
        self.epoch = 0
        self.epochs = int(self.solver.epochs)
        ema = float(self.solver.ema)
        self.ema = WeightAverage(self.module, ema) if ema > 0 else None
        # The best epoch and its weights (best.kept), early stopping: a refitting run trained
        # on its validation part, so it keeps the last epoch instead.
        self.best = BestEpoch(
            self.solver.monitor,
            self.solver.patience,
            keep_last=bool(settings.data.refit),
            kept=self._copy_state(),
        )
        self.teacher_views: TeacherViews | None = None
        self.views_seconds: float | None = None  # making the views, in this session
        self.stored_view_logits: torch.Tensor | None = None  # from a checkpoint, until used

    @property
    def kept_module(self) -> torch.nn.Module:
        """The weights validated, kept as the best and saved: the EMA's when solver.ema is on."""
        return self.module if self.ema is None else self.ema.module

    @property
    def checkpoint_path(self) -> Path | None:
        """The checkpoint written after every epoch (None without an out_dir)."""
        return None if self.out_dir is None else self.out_dir / CHECKPOINT_NAME

    @property
    def best_state(self) -> dict[str, torch.Tensor]:
        """The kept weights of the best epoch (of the start before any)."""
        return self.best.kept

    def _copy_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.kept_module.state_dict().items()}

    def autocast(self):
        """The bfloat16 autocast context of this run's device settings (or none)."""
        return autocast(self.autocast_device)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """A batch (N, 1, H, W) in the network's memory format."""
        return prepare(x, self.channels_last)

    def train_epoch(self) -> tuple[float, float, float]:
        """One pass over the shuffled training data: mean loss, accuracy and the last lr."""
        self.module.train()
        order = torch.randperm(len(self.data.train_labels), generator=self.generator)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.float64)
        lr = 0.0
        steps = tqdm(
            range(self.steps_per_epoch),
            desc=f"epoch {self.epoch + 1}/{self.epochs}",
            leave=False,
            disable=not show_bars(self.verbose),
            file=sys.stderr,
        )
        for step in steps:
            lr = set_lr(
                self.optimizer, self.solver, self.epoch * self.steps_per_epoch + step,
                self.steps_per_epoch,
            )  # fmt: skip
            index = order[step * self.batch_size : (step + 1) * self.batch_size].to(self.device)
            x, targets, soft = self.training_batch(index)
            with self.autocast():
                logits = self.module(self.prepare(x))
            loss = self._loss(logits.float(), x, targets, soft)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.module)
            loss_sum += loss.detach()
            correct += targets.hits(logits)
        seen = self.steps_per_epoch * self.batch_size
        return float(loss_sum) / self.steps_per_epoch, float(correct) / seen, lr

    def training_batch(
        self, index: torch.Tensor
    ) -> tuple[torch.Tensor, Targets, torch.Tensor | None]:
        """The augmented images (B, 1, crop, crop) of the samples at ``index`` (B,), their
        targets, and the teachers' logits (B, C) when they come from :class:`TeacherViews`.

        Random crop, flip, rotation and scale (or this epoch's teacher view); then random
        erasing and mixup or CutMix when on.
        """
        aug, data = self.augment, self.data
        soft = None
        if self.teacher_views is not None:
            x, soft = self._teacher_view(index)
        else:
            x = random_warp(
                normalize(data.train_images[index], self.mean, self.std),
                aug.crop,
                flip=aug.flip,
                rotate=aug.rotate,
                scale=aug.scale,
                generator=self.generator,
            )
        if aug.erase > 0:
            x = random_erase(x, aug.erase, generator=self.generator)
        y = data.train_labels[index]
        x, partners, lam = mix_batch(
            x, mixup=aug.mixup, cutmix=aug.cutmix, generator=self.generator
        )
        return x, Targets(y, y[partners], lam), soft

    def _teacher_view(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This epoch's teacher view (B, 1, crop, crop) of the samples at ``index`` (B,), and the
        teachers' logits (B, C) on it. Flip-averaged logits (distill.flip) are the same for a view
        and its mirror image, so then each view is also mirrored at random."""
        views = self.teacher_views
        assert views is not None
        view = self.epoch % len(views.images)
        x, soft = views.images[view][index].float(), views.logits[view][index]
        if self.augment.flip and self.settings.distill.flip:
            mirror = torch.rand(len(index), generator=self.generator) < 0.5
            x = torch.where(mirror.to(x.device)[:, None, None, None], x.flip(-1), x)
        return x, soft

    def make_teacher_views(self, count: int, logits: torch.Tensor | None = None) -> TeacherViews:
        """``count`` views of every training image and the teachers' logits on them, on this
        run's device (:func:`ferlab.deep.distillation.make_teacher_views`)."""
        views = distillation.make_teacher_views(
            self.data.train_images,
            count,
            augment=self.augment,
            seed=self.settings.seed,
            batch_size=self.batch_size,
            mean=self.mean,
            std=self.std,
            logits_of=self.teacher_logits,
            n_classes=len(self.teachers[0].class_names),
            verbose=self.verbose,
            logits=logits,
        )
        return TeacherViews(views.images.to(self.device), views.logits.to(self.device))

    def _loss(
        self,
        logits: torch.Tensor,
        x: torch.Tensor,
        targets: Targets,
        soft: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The training loss of logits (B, C) on batch ``x``: (mixed) cross-entropy, distilled
        from the teachers' logits ``soft`` (B, C), or their logits on the same ``x`` when not
        given, when there are teachers."""
        smoothing = self.solver.label_smoothing
        if not self.teachers:
            return mixed_cross_entropy(logits, targets, smoothing)
        distill = self.settings.distill
        if soft is None:
            soft = self.teacher_logits(x)
        return distillation_loss(
            logits, soft, targets,
            temperature=distill.temperature, alpha=distill.alpha, label_smoothing=smoothing,
        )  # fmt: skip

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The teachers' mean logits (N, C) on the student's augmented batch (N, 1, H, W), and
        on its mirror image too when ``distill.flip`` is set, run by ``self.teacher_runtime``."""
        networks = self.teacher_networks.get(
            self.teacher_runtime, self.teachers, x, self.channels_last
        )
        return distillation.teacher_logits(
            self.teachers, networks, x, mean=self.mean, std=self.std,
            flip=self.settings.distill.flip, autocast_device=self.autocast_device,
        )  # fmt: skip

    @torch.no_grad()
    def evaluate(
        self, images: torch.Tensor, labels: torch.Tensor, module: torch.nn.Module | None = None
    ) -> tuple[float, float]:
        """Mean cross-entropy and accuracy of ``module`` (the trained network by default) on
        centre crops of uint8 images (N, H, W) with labels (N,)."""
        module = self.module if module is None else module
        module.eval()
        loss_sum, correct = 0.0, 0
        size = self.solver.eval_batch_size
        for start in range(0, len(labels), size):
            x = normalize(images[start : start + size], self.mean, self.std)
            x = center_crop(x, self.augment.crop)
            y = labels[start : start + size]
            with self.autocast():
                logits = module(self.prepare(x)).float()
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
        return loss_sum / len(labels), correct / len(labels)

    def train(self) -> dict[str, list]:
        """Train until ``epochs`` or early stopping; keep the best weights (the last with
        ``data.refit``); return the history."""
        self._make_views_once()
        self.run_epochs()
        self.module.load_state_dict(self.best_state)
        return self.history

    def _make_views_once(self) -> None:
        """Make the teacher views (distill.views) unless made or the run is over."""
        views = int(self.settings.distill.views)
        if not (self.teachers and views) or self.teacher_views is not None or self.finished:
            return
        started = time.perf_counter()
        stored = self.stored_view_logits
        self.teacher_views = self.make_teacher_views(views, stored)
        self.stored_view_logits = None
        self.views_seconds = time.perf_counter() - started
        if self.verbose:
            source = "from the checkpoint" if stored is not None else "computed"
            print(
                f"{views} views of each training image, the teachers' logits {source}: "
                f"{self.views_seconds:.1f}s",
                file=sys.stderr,
            )

    def train_one_epoch(self) -> None:
        """One epoch: a pass over the augmented training data, validation of the kept
        weights, the best epoch (its model file saved), the epoch's line and
        :meth:`end_epoch`."""
        started = time.perf_counter()
        train_loss, train_acc, lr = self.train_epoch()
        if not math.isfinite(train_loss):
            raise TrainingDiverged(
                f"the training loss became {train_loss} in epoch {self.epoch + 1}; lower solver.lr"
            )
        val_loss, val_acc = self.evaluate(
            self.data.val_images, self.data.val_labels, self.kept_module
        )
        self.epoch += 1
        values = (train_loss, train_acc, val_loss, val_acc, lr, time.perf_counter() - started)
        record_epoch(self.history, HISTORY_KEYS, values)
        improved = self.best.update(self.epoch, val_loss, val_acc, self._copy_state)
        if improved and self.out_dir is not None and self.meta is not None:
            save_cnn(self.kept_module, self.meta, self.out_dir / MODEL_NAME)
        if self.verbose:
            print(
                f"epoch {self.epoch}/{self.epochs}  train loss {train_loss:.4f} "
                f"acc {percent(train_acc)}  val loss {val_loss:.4f} acc {percent(val_acc)}"
                f"{' *' if improved else ''}  lr {lr:.4g}  {values[-1]:.1f}s",
                file=sys.stderr,
            )
            if self.stopped_early:
                print(self.best.stop_message(), file=sys.stderr)
        self.end_epoch()

    def save_checkpoint(self, path: str | Path) -> Path:
        """Weights, optimizer state, RNG states and history (:mod:`ferlab.deep.checkpoint`)."""
        return checkpoint.save_checkpoint(self, path)

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore everything :meth:`save_checkpoint` wrote."""
        checkpoint.load_checkpoint(self, path)
