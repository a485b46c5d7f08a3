"""Distillation's runtime: the teachers, how they run, their logits and precomputed views."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from ferlab.common.progress import show_bars
from ferlab.deep.augment import normalize, random_warp
from ferlab.deep.device import autocast, memory_format, prepare
from ferlab.deep.export import network_session
from ferlab.errors import ConfigError, ModelFileError

if TYPE_CHECKING:
    from ferlab.settings import AugmentSettings

# distill.views draws its views from a generator of its own, seeded with the run's seed plus this
# offset: a resumed run draws the same views, and they share no stream with the batches' draws.
VIEW_SEED_OFFSET = 2**32


@dataclass
class TeacherViews:
    """Augmented views of the training images and the teachers' logits on them (distill.views).

    ``images``: float16 (V, N, 1, crop, crop), standardised; ``logits``: float32 (V, N, C).
    """

    images: torch.Tensor
    logits: torch.Tensor


class OnnxNetwork:
    """A network run by an onnxruntime session (:func:`ferlab.deep.export.network_session`),
    called like the module on a CPU float32 batch and returning a tensor."""

    def __init__(self, session) -> None:
        self.session = session

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"x": x.float().contiguous().numpy()})[0])


def teacher_runtime(device: torch.device, autocast_device: str | None) -> str:
    """``onnxruntime`` for teachers in float32 on the CPU, else ``torch``.

    There ONNX Runtime gives the same logits to float rounding (about 1e-6) in about half
    PyTorch's time, and teachers take most of a distillation step (benchmarks/teacher_speed.py).
    """
    return "onnxruntime" if device.type == "cpu" and autocast_device is None else "torch"


class TeacherNetworks:
    """Each teacher's network as a function of its scaled batch (N, 1, H, W) -> logits (N, C),
    made on first use and kept until the runtime or the teachers change."""

    def __init__(self) -> None:
        self.members: list | None = None
        self.networks: list[Callable] = []

    def get(
        self, runtime: str, teachers: list, example: torch.Tensor, channels_last: bool
    ) -> list[Callable]:
        """The networks of ``teachers`` run by ``runtime``; ONNX Runtime sessions are exported
        for the shape of ``example``'s images."""
        members = [runtime, *(id(teacher.module) for teacher in teachers)]
        if self.members != members:
            self.members = members
            if runtime == "onnxruntime":
                threads = torch.get_num_threads()
                self.networks = [
                    OnnxNetwork(network_session(t.module, example, threads=threads))
                    for t in teachers
                ]
            else:
                # Teachers take the student's memory format: channels_last inputs through
                # contiguous weights run about half as fast under bfloat16 on the CPU.
                fmt = memory_format(channels_last)
                modules = [t.module.to(memory_format=fmt) for t in teachers]
                self.networks = [lambda x, m=m: m(prepare(x, channels_last)) for m in modules]
        return self.networks


@torch.no_grad()
def teacher_logits(
    teachers: list,
    networks: list[Callable],
    x: torch.Tensor,
    *,
    mean: float,
    std: float,
    flip: bool,
    autocast_device: str | None,
) -> torch.Tensor:
    """The teachers' mean logits (N, C) on the student's standardised batch ``x`` (N, 1, H, W),
    and on its mirror image too with ``flip``; each teacher sees the pixels in its own scaling."""
    pixels = x * std + mean  # back to 0..255, then each teacher's own scaling
    views = [pixels, pixels.flip(-1)] if flip else [pixels]
    with autocast(autocast_device):
        logits = [
            network((view - teacher.mean) / teacher.std).float()
            for teacher, network in zip(teachers, networks, strict=True)
            for view in views
        ]
    return torch.stack(logits).mean(0)


@torch.no_grad()
def make_teacher_views(
    images: torch.Tensor,
    count: int,
    *,
    augment: AugmentSettings,
    seed: int,
    batch_size: int,
    mean: float,
    std: float,
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    n_classes: int,
    verbose: bool,
    logits: torch.Tensor | None = None,
) -> TeacherViews:
    """``count`` augmented views of every training image (N, H, W) uint8 (random crop, flip,
    rotation and scale, drawn from ``seed``) and ``logits_of`` each view's batches. Given the
    ``logits`` (V, N, C) of the same run (from its checkpoint), no teacher runs: the views are
    drawn again, and they are the same. Both stay on the CPU."""
    generator = torch.Generator().manual_seed(int(seed) + VIEW_SEED_OFFSET)
    crop = augment.crop
    views = torch.empty((count, len(images), 1, crop, crop), dtype=torch.float16)
    known = logits is not None
    if logits is None:
        logits = torch.empty((count, len(images), n_classes))
    started = time.perf_counter()
    bar = tqdm(
        total=count * math.ceil(len(images) / batch_size), desc="teacher views", leave=False,
        disable=not show_bars(verbose), file=sys.stderr,
    )  # fmt: skip
    for view in range(count):
        for start in range(0, len(images), batch_size):
            x = random_warp(
                normalize(images[start : start + batch_size], mean, std),
                crop,
                flip=augment.flip,
                rotate=augment.rotate,
                scale=augment.scale,
                generator=generator,
            )
            views[view, start : start + batch_size] = x.half().cpu()
            if not known:
                logits[view, start : start + batch_size] = logits_of(x).cpu()
            bar.update()
        if verbose and bar.disable and not known:  # a log file still shows progress
            print(
                f"teacher views: {view + 1}/{count} ({time.perf_counter() - started:.0f}s)",
                file=sys.stderr,
            )
    bar.close()
    return TeacherViews(views, logits)


def check_view_logits(
    logits: torch.Tensor, *, views: int, n_train: int, n_classes: int, path
) -> torch.Tensor:
    """A checkpoint's teacher logits on the views (V, N, C), checked to fit this run."""
    expected = (views, n_train, n_classes)
    if tuple(logits.shape) != expected or logits.dtype != torch.float32:
        raise ModelFileError(
            f"{path}: the stored teacher logits {tuple(logits.shape)} do not fit "
            f"{views} views of {n_train} training images"
        )
    if not torch.isfinite(logits).all():
        raise ModelFileError(f"{path}: non-finite stored teacher logits")
    return logits


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
