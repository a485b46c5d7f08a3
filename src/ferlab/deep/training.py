"""Training the CNN: in-memory tensors, batch augmentation, schedules, checkpoints and resume."""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ferlab.deep.augment import center_crop, mix_batch, normalize, random_erase, random_warp
from ferlab.deep.ema import WeightAverage
from ferlab.deep.export import network_session
from ferlab.deep.io import model_meta, save_cnn
from ferlab.deep.model import architecture_from_config, build_cnn, copy_widened, widens
from ferlab.deep.settings import validate_cnn_config
from ferlab.deep.tensors import CHECKPOINT_FORMAT, FORMAT_VERSION, read_tensors, write_tensors
from ferlab.errors import ConfigError, DataError, ModelFileError, TrainingDiverged
from ferlab.metrics import percent
from ferlab.progress import show_bars

HISTORY_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
# What may differ between a CNN run and its --resume (the schedule depends on the epochs, so
# they may not): where the data lie (their contents are checked) and where the run computes.
CNN_MAY_CHANGE = ("data.path", "device.device", "device.threads")
CHECKPOINT_NAME = "checkpoint.safetensors"
MODEL_NAME = "model.safetensors"
# The CNN's own preprocessing, recorded with the data settings: pixels standardised by one mean/std.
PREPROCESSING = "cnn-standardize"
EpochCallback = Callable[[int, dict], None]
# distill.views draws its views from a generator of its own, seeded with the run's seed plus this
# offset: a resumed run draws the same views, and they share no stream with the batches' draws.
VIEW_SEED_OFFSET = 2**32
# PyTorch's probes of the CPU's bfloat16 instructions (private, so looked up by name). Without
# them, bfloat16 autocast is emulated: 7.6x slower training on a 2-core AMD EPYC Zen 3.
BF16_PROBES = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; anything else must exist here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but no CUDA GPU is available")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {name!r}; use auto, cpu or cuda[:N]")
    return device


def autocast_device(settings: dict, device: torch.device) -> str | None:
    """The device type to run bfloat16 autocast on under the ``device`` settings, or None."""
    if device.type == "cuda" and settings["amp"]:
        return "cuda"
    if device.type == "cpu" and settings["cpu_bf16"]:
        return "cpu"
    return None


def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX-512 BF16 or AMX), as PyTorch reports them;
    True where this PyTorch cannot say."""
    probes = [getattr(torch.cpu, name, None) for name in BF16_PROBES]
    return any(probe is None or probe() for probe in probes)


def lr_factor(progress: float, schedule: str, warmup: float) -> float:
    """The learning rate's multiplier after ``progress`` (0..1) of all training steps."""
    if schedule == "constant":
        return 1.0
    if schedule == "onecycle" and progress < warmup:
        return 0.04 + 0.96 * progress / warmup
    start = warmup if schedule == "onecycle" else 0.0
    annealed = (progress - start) / max(1e-12, 1.0 - start)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, annealed)))


@dataclass(frozen=True)
class Targets:
    """A training batch's labels (N,), mixed with weight ``lam`` with its partners' labels (N,).

    Without mixup or CutMix the partners are the labels themselves and ``lam`` is 1.
    """

    labels: torch.Tensor
    partners: torch.Tensor
    lam: float = 1.0

    @classmethod
    def plain(cls, labels: torch.Tensor) -> Targets:
        """Unmixed labels."""
        return cls(labels, labels, 1.0)

    def hits(self, logits: torch.Tensor) -> torch.Tensor:
        """Correct predictions of logits (N, C), each label counted with its weight in the mix."""
        predicted = logits.argmax(1)
        hits = (predicted == self.labels).sum().double()
        if self.lam == 1.0:
            return hits
        return self.lam * hits + (1.0 - self.lam) * (predicted == self.partners).sum().double()


def mixed_cross_entropy(
    logits: torch.Tensor, targets: Targets, label_smoothing: float = 0.0
) -> torch.Tensor:
    """``lam * CE(logits, labels) + (1 - lam) * CE(logits, partners)`` for logits (N, C)."""
    loss = F.cross_entropy(logits, targets.labels, label_smoothing=label_smoothing)
    if targets.lam == 1.0:
        return loss
    other = F.cross_entropy(logits, targets.partners, label_smoothing=label_smoothing)
    return targets.lam * loss + (1.0 - targets.lam) * other


@dataclass
class TeacherViews:
    """Augmented views of the training images and the teachers' logits on them (distill.views).

    ``images``: float16 (V, N, 1, crop, crop), standardised; ``logits``: float32 (V, N, C).
    """

    images: torch.Tensor
    logits: torch.Tensor


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


class CNNTrainer:
    """Trains a network on :class:`TensorData` as ``config`` says; the best epoch's weights win."""

    def __init__(
        self,
        config: dict,
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
        self.config = config
        self.teachers = list(teachers)  # CNNClassifiers whose mean logits the student learns
        self.solver = config["solver"]
        self.augment = config["augment"]
        self.device = device
        self.channels_last = bool(config["device"]["channels_last"])
        self.autocast_device = autocast_device(config["device"], device)
        # Teachers in float32 on the CPU run through ONNX Runtime: the same logits to float
        # rounding (about 1e-6) in about half PyTorch's time, and teachers take most of a
        # distillation step (benchmarks/teacher_speed.py). Otherwise PyTorch runs them.
        cpu_float32 = device.type == "cpu" and self.autocast_device is None
        self.teacher_runtime = "onnxruntime" if cpu_float32 else "torch"
        self._networks_of: list | None = None  # the runtime and teachers _networks runs
        self._networks: list[Callable] = []
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.module = module.to(device=device, memory_format=memory_format)
        self.data = data
        self.mean, self.std = float(mean), float(std)
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.meta = meta
        self.verbose = verbose
        self.epoch_callback = epoch_callback
        self.generator = torch.Generator().manual_seed(int(config["seed"]))
        self.optimizer = self._make_optimizer()
        n = len(data.train_labels)
        if n == 0 or len(data.val_labels) == 0:
            raise DataError("the CNN needs training and validation samples")
        self.batch_size = min(int(self.solver["batch_size"]), n)
        self.steps_per_epoch = n // self.batch_size
        self.history: dict[str, list] = {key: [] for key in HISTORY_KEYS}
        self.epoch = 0
        self.best_val_acc = -1.0
        self.best_epoch = 0
        self.stopped_early = False
        ema = float(self.solver["ema"])
        self.ema = WeightAverage(self.module, ema) if ema > 0 else None
        self.best_state = self._copy_state()
        self.teacher_views: TeacherViews | None = None
        self.views_seconds: float | None = None  # making the views, in this session
        self._checkpoint_view_logits: torch.Tensor | None = None

    @property
    def kept_module(self) -> torch.nn.Module:
        """The weights validated, kept as the best and saved: the EMA's when solver.ema is on."""
        return self.module if self.ema is None else self.ema.module

    def _make_optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for name, param in self.module.named_parameters():
            (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
        groups = [
            {"params": decay, "weight_decay": self.solver["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        lr = self.solver["lr"]
        if self.solver["optimizer"] == "adamw":
            return torch.optim.AdamW(groups, lr=lr)
        return torch.optim.SGD(groups, lr=lr, momentum=self.solver["momentum"], nesterov=True)

    def _copy_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.kept_module.state_dict().items()}

    def _autocast(self):
        if self.autocast_device is not None:
            return torch.autocast(self.autocast_device, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _set_lr(self, step: int) -> float:
        total = self.steps_per_epoch * self.solver["epochs"]
        factor = lr_factor(step / total, self.solver["schedule"], self.solver["warmup"])
        lr = self.solver["lr"] * factor
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def _train_epoch(self) -> tuple[float, float, float]:
        """One pass over the shuffled training data: mean loss, accuracy and the last lr."""
        self.module.train()
        order = torch.randperm(len(self.data.train_labels), generator=self.generator)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.float64)
        lr = 0.0
        steps = tqdm(
            range(self.steps_per_epoch),
            desc=f"epoch {self.epoch + 1}/{self.solver['epochs']}",
            leave=False,
            disable=not show_bars(self.verbose),
            file=sys.stderr,
        )
        for step in steps:
            lr = self._set_lr(self.epoch * self.steps_per_epoch + step)
            index = order[step * self.batch_size : (step + 1) * self.batch_size].to(self.device)
            x, targets, soft = self._training_batch(index)
            with self._autocast():
                logits = self.module(self._prepare(x))
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

    def _training_batch(
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
                aug["crop"],
                flip=aug["flip"],
                rotate=aug["rotate"],
                scale=aug["scale"],
                generator=self.generator,
            )
        if aug["erase"] > 0:
            x = random_erase(x, aug["erase"], generator=self.generator)
        y = data.train_labels[index]
        x, partners, lam = mix_batch(
            x, mixup=aug["mixup"], cutmix=aug["cutmix"], generator=self.generator
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
        if self.augment["flip"] and self.config["distill"]["flip"]:
            mirror = torch.rand(len(index), generator=self.generator) < 0.5
            x = torch.where(mirror.to(x.device)[:, None, None, None], x.flip(-1), x)
        return x, soft

    @torch.no_grad()
    def _make_teacher_views(self, count: int, logits: torch.Tensor | None = None) -> TeacherViews:
        """``count`` augmented views of every training image (random crop, flip, rotation and
        scale, drawn from the run's seed) and the teachers' mean logits on each. Given the
        ``logits`` (V, N, C) of the same run (from its checkpoint), the teachers do not run: the
        views are drawn again, and they are the same."""
        aug, images = self.augment, self.data.train_images
        generator = torch.Generator().manual_seed(int(self.config["seed"]) + VIEW_SEED_OFFSET)
        size = self.batch_size
        crop = aug["crop"]
        views = torch.empty((count, len(images), 1, crop, crop), dtype=torch.float16)
        known = logits is not None
        if logits is None:
            logits = torch.empty((count, len(images), len(self.teachers[0].class_names)))
        started = time.perf_counter()
        bar = tqdm(
            total=count * math.ceil(len(images) / size), desc="teacher views", leave=False,
            disable=not show_bars(self.verbose), file=sys.stderr,
        )  # fmt: skip
        for view in range(count):
            for start in range(0, len(images), size):
                x = random_warp(
                    normalize(images[start : start + size], self.mean, self.std),
                    crop,
                    flip=aug["flip"],
                    rotate=aug["rotate"],
                    scale=aug["scale"],
                    generator=generator,
                )
                views[view, start : start + size] = x.half().cpu()
                if not known:
                    logits[view, start : start + size] = self._teacher_logits(x).cpu()
                bar.update()
            if self.verbose and bar.disable and not known:  # a log file still shows progress
                print(
                    f"teacher views: {view + 1}/{count} ({time.perf_counter() - started:.0f}s)",
                    file=sys.stderr,
                )
        bar.close()
        return TeacherViews(views.to(self.device), logits.to(self.device))

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
        smoothing = self.solver["label_smoothing"]
        if not self.teachers:
            return mixed_cross_entropy(logits, targets, smoothing)
        distill = self.config["distill"]
        if soft is None:
            soft = self._teacher_logits(x)
        return distillation_loss(
            logits, soft, targets,
            temperature=distill["temperature"], alpha=distill["alpha"], label_smoothing=smoothing,
        )  # fmt: skip

    @torch.no_grad()
    def _teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The teachers' mean logits (N, C) on the student's augmented batch (N, 1, H, W), and
        on its mirror image too when ``distill.flip`` is set."""
        pixels = x * self.std + self.mean  # back to 0..255, then each teacher's own scaling
        views = [pixels, pixels.flip(-1)] if self.config["distill"]["flip"] else [pixels]
        networks = self._teacher_networks(x)
        with self._autocast():
            logits = [
                network((view - teacher.mean) / teacher.std).float()
                for teacher, network in zip(self.teachers, networks, strict=True)
                for view in views
            ]
        return torch.stack(logits).mean(0)

    def _teacher_networks(self, example: torch.Tensor) -> list[Callable]:
        """Each teacher's network as a function of its scaled batch (N, 1, H, W) -> logits, run
        by ``self.teacher_runtime``; ONNX Runtime sessions are exported on first use."""
        members = [self.teacher_runtime, *(id(teacher.module) for teacher in self.teachers)]
        if self._networks_of != members:
            self._networks_of = members
            if self.teacher_runtime == "onnxruntime":
                threads = torch.get_num_threads()
                self._networks = [
                    OnnxNetwork(network_session(t.module, example, threads=threads))
                    for t in self.teachers
                ]
            else:
                # Teachers take the student's memory format: channels_last inputs through
                # contiguous weights run about half as fast under bfloat16 on the CPU.
                memory_format = (
                    torch.channels_last if self.channels_last else torch.contiguous_format
                )
                modules = [t.module.to(memory_format=memory_format) for t in self.teachers]
                self._networks = [lambda x, m=m: m(self._prepare(x)) for m in modules]
        return self._networks

    @torch.no_grad()
    def evaluate(
        self, images: torch.Tensor, labels: torch.Tensor, module: torch.nn.Module | None = None
    ) -> tuple[float, float]:
        """Mean cross-entropy and accuracy of ``module`` (the trained network by default) on
        centre crops of uint8 images (N, H, W) with labels (N,)."""
        module = self.module if module is None else module
        module.eval()
        loss_sum, correct = 0.0, 0
        size = self.solver["eval_batch_size"]
        for start in range(0, len(labels), size):
            x = normalize(images[start : start + size], self.mean, self.std)
            x = center_crop(x, self.augment["crop"])
            y = labels[start : start + size]
            with self._autocast():
                logits = module(self._prepare(x)).float()
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
        return loss_sum / len(labels), correct / len(labels)

    def train(self) -> dict[str, list]:
        """Train until ``epochs`` or early stopping; keep the best weights (the last with
        ``data.refit``); return the history."""
        views = int(self.config["distill"]["views"])
        if self.teachers and views and self.teacher_views is None and not self._finished:
            started = time.perf_counter()
            stored = self._checkpoint_view_logits
            self.teacher_views = self._make_teacher_views(views, stored)
            self._checkpoint_view_logits = None
            self.views_seconds = time.perf_counter() - started
            if self.verbose:
                source = "from the checkpoint" if stored is not None else "computed"
                print(
                    f"{views} views of each training image, the teachers' logits {source}: "
                    f"{self.views_seconds:.1f}s",
                    file=sys.stderr,
                )
        try:
            while not self._finished:
                self._train_one_epoch()
        except KeyboardInterrupt:
            if self.out_dir is not None and self.epoch:
                print(
                    f"interrupted after epoch {self.epoch}; continue with "
                    f"--resume {self.out_dir / CHECKPOINT_NAME}",
                    file=sys.stderr,
                )
            raise
        self.module.load_state_dict(self.best_state)
        return self.history

    @property
    def _finished(self) -> bool:
        return self.epoch >= self.solver["epochs"] or self.stopped_early

    def _train_one_epoch(self) -> None:
        started = time.perf_counter()
        train_loss, train_acc, lr = self._train_epoch()
        if not math.isfinite(train_loss):
            raise TrainingDiverged(
                f"the training loss became {train_loss} in epoch {self.epoch + 1}; lower solver.lr"
            )
        val_loss, val_acc = self.evaluate(
            self.data.val_images, self.data.val_labels, self.kept_module
        )
        self.epoch += 1
        values = (train_loss, train_acc, val_loss, val_acc, lr, time.perf_counter() - started)
        for key, value in zip(HISTORY_KEYS, values, strict=True):
            self.history[key].append(float(value))
        # A refitting run trained on its validation part, so it keeps the last epoch instead.
        improved = self.config["data"]["refit"] or val_acc > self.best_val_acc
        if improved:
            self.best_val_acc, self.best_epoch = val_acc, self.epoch
            self.best_state = self._copy_state()
            if self.out_dir is not None and self.meta is not None:
                save_cnn(self.kept_module, self.meta, self.out_dir / MODEL_NAME)
        patience = self.solver["patience"]
        if patience is not None and self.epoch - self.best_epoch >= patience:
            self.stopped_early = True
        if self.verbose:
            print(
                f"epoch {self.epoch}/{self.solver['epochs']}  train loss {train_loss:.4f} "
                f"acc {percent(train_acc)}  val loss {val_loss:.4f} acc {percent(val_acc)}"
                f"{' *' if improved else ''}  lr {lr:.4g}  {values[-1]:.1f}s",
                file=sys.stderr,
            )
        if self.out_dir is not None:
            self.save_checkpoint(self.out_dir / CHECKPOINT_NAME)
        if self.epoch_callback is not None:
            self.epoch_callback(self.epoch, self.history)

    def save_checkpoint(self, path: str | Path) -> Path:
        """Weights, optimizer state, RNG states and history, in safetensors + JSON (no pickle)."""
        tensors = {f"model.{k}": v for k, v in self.module.state_dict().items()}
        tensors.update({f"best.{k}": v for k, v in self.best_state.items()})
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        optimizer_state = self.optimizer.state_dict()
        state_keys: dict[str, dict] = {}
        for index, state in optimizer_state["state"].items():
            state_keys[str(index)] = {}
            for key, value in state.items():
                if torch.is_tensor(value):
                    tensors[f"optim.{index}.{key}"] = value
                    state_keys[str(index)][key] = None
                else:
                    state_keys[str(index)][key] = value
        if self.teacher_views is not None:
            # The teachers' work, hours on a CPU; the views themselves are drawn again on resume.
            tensors["views.logits"] = self.teacher_views.logits.cpu()
        tensors["rng.data"] = self.generator.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        meta = {
            "format": CHECKPOINT_FORMAT,
            "format_version": FORMAT_VERSION,
            "epoch": self.epoch,
            "best_val_acc": self.best_val_acc,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "ema_updates": None if self.ema is None else self.ema.updates,
            "history": self.history,
            "optimizer": {"param_groups": optimizer_state["param_groups"], "state": state_keys},
            "config": self.config,
            "model_meta": self.meta,
        }
        return write_tensors(path, meta, tensors)

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore everything :meth:`save_checkpoint` wrote."""
        meta, tensors = read_tensors(path, CHECKPOINT_FORMAT)
        if meta["config"]["model"] != self.config["model"]:
            raise ModelFileError(f"{path}: checkpoint of a different network than this config's")
        try:
            self.module.load_state_dict(
                {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True
            )
            self.best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
            if self.ema is not None:
                ema_state = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
                self.ema.load_state_dict(ema_state, meta["ema_updates"])
            state = {
                int(index): {
                    key: tensors[f"optim.{index}.{key}"] if value is None else value
                    for key, value in keys.items()
                }
                for index, keys in meta["optimizer"]["state"].items()
            }
            self.optimizer.load_state_dict(
                {"state": state, "param_groups": meta["optimizer"]["param_groups"]}
            )
            self.generator.set_state(tensors["rng.data"])
            torch.set_rng_state(tensors["rng.torch"])
            if self.device.type == "cuda" and "rng.cuda" in tensors:
                torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise ModelFileError(f"{path}: checkpoint does not fit this network ({exc})") from None
        self._checkpoint_view_logits = self._stored_view_logits(tensors.get("views.logits"), path)
        self.epoch = int(meta["epoch"])
        self.best_val_acc = float(meta["best_val_acc"])
        self.best_epoch = int(meta["best_epoch"])
        self.stopped_early = bool(meta["stopped_early"])
        self.history = {key: list(meta["history"][key]) for key in HISTORY_KEYS}

    def _stored_view_logits(self, logits: torch.Tensor | None, path) -> torch.Tensor | None:
        """A checkpoint's teacher logits on the views (V, N, C), checked to fit this run."""
        views = int(self.config["distill"]["views"])
        if logits is None or not (self.teachers and views):
            return None
        expected = (views, len(self.data.train_labels), len(self.teachers[0].class_names))
        if tuple(logits.shape) != expected or logits.dtype != torch.float32:
            raise ModelFileError(
                f"{path}: the stored teacher logits {tuple(logits.shape)} do not fit "
                f"{views} views of {expected[1]} training images"
            )
        if not torch.isfinite(logits).all():
            raise ModelFileError(f"{path}: non-finite stored teacher logits")
        return logits

    def resume(self, path: str | Path) -> dict[str, list]:
        """Continue training from a checkpoint."""
        self.load_checkpoint(path)
        if self.verbose:
            print(f"resuming after epoch {self.epoch} from {path}", file=sys.stderr)
        return self.train()


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor | Targets,
    *,
    temperature: float,
    alpha: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Hinton et al.'s distillation loss from logits (N, C) and labels (N,) or mixed targets.

    ``(1 - alpha) * CE(student, labels) + alpha * T**2 * KL(softmax(teacher / T) ||
    softmax(student / T))``, the T**2 keeping the soft term's gradients on the hard term's scale.
    With mixed :class:`Targets` the CE is :func:`mixed_cross_entropy` and the teacher's logits
    must be those of the same mixed images.
    """
    targets = labels if isinstance(labels, Targets) else Targets.plain(labels)
    hard = mixed_cross_entropy(student, targets, label_smoothing)
    soft = F.kl_div(
        F.log_softmax(student / temperature, dim=1),
        F.log_softmax(teacher / temperature, dim=1),
        log_target=True,
        reduction="batchmean",
    )
    return (1.0 - alpha) * hard + alpha * temperature**2 * soft


class OnnxNetwork:
    """A network run by an onnxruntime session (:func:`ferlab.deep.export.network_session`),
    called like the module on a CPU float32 batch and returning a tensor."""

    def __init__(self, session) -> None:
        self.session = session

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"x": x.float().contiguous().numpy()})[0])


def teacher_paths(teacher: str | list[str] | None) -> list[str]:
    """The model files ``distill.teacher`` names: none, one or several."""
    return [teacher] if isinstance(teacher, str) else list(teacher or [])


def load_teachers(paths: str | list[str] | None, device: torch.device, classes: list[str]):
    """The teacher CNNs of ``distill.teacher`` (none, one file or several), in eval mode on
    ``device``; each must predict the student's classes."""
    from ferlab.deep.io import load_cnn

    teachers = []
    for path in teacher_paths(paths):
        teacher = load_cnn(path).to(device)
        if teacher.class_names != list(classes):
            raise ConfigError(
                f"distill.teacher {path} predicts {teacher.class_names}, "
                f"the data has {list(classes)}"
            )
        teacher.module.eval()
        teachers.append(teacher)
    return teachers


def load_start(
    path: str, architecture: dict, classes: list[str], training_info: dict, *, refit: bool = False
):
    """The model file of ``model.init``, checked to fit this run: the same network (or a
    narrower one of the same depth, to be widened) and classes, trained on the same split
    (otherwise its training samples would sit in this run's validation part and the choice of
    the best epoch would be biased), unless the run refits: it trains on that part anyway and
    chooses no epoch."""
    from ferlab.data.split import same_held_out_part
    from ferlab.deep.io import load_cnn

    start = load_cnn(path)
    if not widens(start.meta["architecture"], architecture):
        raise ConfigError(
            f"model.init {path} is a different network from the config's model "
            f"(a start may only be narrower: the same blocks with fewer channels)"
        )
    if start.class_names != list(classes):
        raise ConfigError(
            f"model.init {path} predicts {start.class_names}, the data has {list(classes)}"
        )
    if not refit and not same_held_out_part(start.training_info, training_info):
        raise ConfigError(
            f"model.init {path} was trained on another split ({start.training_info}); "
            f"this run uses {training_info}"
        )
    return start


def training_part(splits, *, refit: bool) -> tuple[np.ndarray, np.ndarray]:
    """The images (N, 48, 48) uint8 and labels (N,) a run trains on: the training part, and
    with ``refit`` the validation part after it."""
    if not refit:
        return splits.train.images, splits.train.labels
    return (
        np.concatenate([splits.train.images, splits.val.images]),
        np.concatenate([splits.train.labels, splits.val.labels]),
    )


def image_statistics(images: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the training pixels."""
    pixels = images.astype(np.float64)
    return float(pixels.mean()), float(max(pixels.std(), 1e-6))


def apply_threads(threads: int) -> None:
    """Use ``threads`` CPU threads (0 keeps PyTorch's default)."""
    if threads > 0:
        torch.set_num_threads(threads)


def run_cnn_training(
    config: dict,
    out_dir: str | Path,
    *,
    resume: str | Path | None = None,
    device: str | None = None,
    verbose: bool = True,
    strict: bool = False,
    use_cache: bool = True,
    splits=None,
    epoch_callback: EpochCallback | None = None,
) -> dict:
    """Train the configured CNN; write model, history, curves, config and summary to ``out_dir``."""
    from ferlab.data.split import (
        REFIT_KEY,
        TRAINING_DATA_KEYS,
        load_splits,
        teachers_on_other_splits,
    )
    from ferlab.experiment import start_run, write_json
    from ferlab.plots import plot_history

    config = validate_cnn_config(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    torch_device = resolve_device(device or config["device"]["device"])
    apply_threads(config["device"]["threads"])
    if torch_device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if splits is None:
        splits = load_splits(config, strict=strict, use_cache=use_cache)
    if tuple(splits.image_shape) != (48, 48):
        raise ConfigError(
            f"the CNN takes 48x48 grayscale images; {config['data']['dataset']!r} has "
            f"{'x'.join(map(str, splits.image_shape))}"
        )
    refit = config["data"]["refit"]
    train_images, train_labels = training_part(splits, refit=refit)
    mean, std = image_statistics(train_images)
    architecture = architecture_from_config(config["model"], len(splits.class_names))
    data_info = {**config["data"], "preprocessing": PREPROCESSING}
    training_info = {"data": {k: data_info[k] for k in TRAINING_DATA_KEYS}, "seed": config["seed"]}
    if refit:
        training_info["data"][REFIT_KEY] = True
    start = None
    if config["model"]["init"]:
        start = load_start(
            config["model"]["init"], architecture, splits.class_names, training_info, refit=refit
        )
        mean, std = start.mean, start.std
    meta = model_meta(
        architecture, splits.class_names, mean, std, config["augment"]["crop"], training_info
    )
    teachers = load_teachers(config["distill"]["teacher"], torch_device, splits.class_names)
    other_split_teachers = teachers_on_other_splits(
        training_info, [teacher.training_info for teacher in teachers]
    )
    # Only once every input file is read: a bad one leaves the run folder empty, not half made.
    start_run(config, out_dir, splits, resume, CNN_MAY_CHANGE)
    torch.manual_seed(config["seed"])
    module = build_cnn(architecture)
    if start is not None:
        copies = torch.Generator().manual_seed(config["seed"])
        copy_widened(start.module, module, copies)
    data = TensorData.from_arrays(
        train_images, train_labels, splits.val.images, splits.val.labels, torch_device
    )
    trainer = CNNTrainer(
        config,
        module,
        data,
        mean,
        std,
        device=torch_device,
        out_dir=out_dir,
        meta=meta,
        verbose=verbose,
        epoch_callback=epoch_callback,
        teachers=teachers,
    )
    if verbose:
        params = sum(p.numel() for p in module.parameters())
        held_out = (
            f"the validation part's {len(splits.val)} included (data.refit)"
            if refit
            else f"validating on {len(splits.val)}"
        )
        print(
            f"training on {len(train_labels)} samples, {held_out}; "
            f"CNN widths {architecture['widths']} convs {architecture['convs']} "
            f"({params:,} parameters) on {torch_device}",
            file=sys.stderr,
        )
        if other_split_teachers:
            print(
                f"warning: {other_split_teachers} of {len(teachers)} teachers trained on another "
                "split, which holds most of this run's validation part, so its validation "
                "accuracy will be optimistic; give every run the same data.split_seed to keep "
                "the validation part unseen",
                file=sys.stderr,
            )
        if trainer.autocast_device == "cpu" and not cpu_has_bf16():
            print(
                "warning: device.cpu_bf16 is on, but this CPU has no bfloat16 instructions "
                "(AVX-512 BF16 or AMX), so training runs several times slower than in float32; "
                "leave it off here",
                file=sys.stderr,
            )
    history = trainer.resume(resume) if resume else trainer.train()
    save_cnn(trainer.module, meta, out_dir / MODEL_NAME)
    write_json(out_dir / "history.json", history)
    write_json(out_dir / "config.json", config)
    plot_history(history, out_dir, title=out_dir.name, best_epoch=trainer.best_epoch or None)
    summary = {
        "dataset": config["data"]["dataset"],
        "val_accuracy": trainer.evaluate(data.val_images, data.val_labels)[1],
        "epochs": trainer.epoch,
        "best_epoch": trainer.best_epoch,
        "stopped_early": trainer.stopped_early,
        "seconds": round(time.perf_counter() - started, 2),
        "train_seconds": round(float(sum(history["seconds"])), 2),
        "n_train": len(train_labels),
        "n_val": len(splits.val),
        "device": str(torch_device),
        "threads": torch.get_num_threads() if torch_device.type == "cpu" else None,
    }
    if refit:
        summary["refit"] = True
    if teachers:
        summary["teachers_on_other_splits"] = other_split_teachers
    if trainer.views_seconds is not None:
        summary["views_seconds"] = round(trainer.views_seconds, 2)
    from ferlab.deep.io import load_cnn

    classifier = load_cnn(out_dir / MODEL_NAME).to(torch_device)
    for name, part in splits.tests.items():
        summary[f"{name}_accuracy"] = float((classifier.predict(part.images) == part.labels).mean())
    classifier.tta = "flip"
    for name, part in splits.tests.items():
        summary[f"{name}_accuracy_flip_tta"] = float(
            (classifier.predict(part.images) == part.labels).mean()
        )
    if splits.tests:
        summary["test_accuracy"] = summary[f"{next(iter(splits.tests))}_accuracy"]
    write_json(out_dir / "summary.json", summary)
    (out_dir / CHECKPOINT_NAME).unlink(missing_ok=True)
    return summary


def history_json(history: dict) -> str:
    """The history as indented JSON."""
    return json.dumps(history, indent=2)
