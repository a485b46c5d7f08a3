"""One CNN training run, from a config to a run folder: model, history, curves and summary."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ferlab.deep.checkpoint import CHECKPOINT_NAME, MODEL_NAME, load_start
from ferlab.deep.device import cpu_has_bf16, setup_device
from ferlab.deep.distillation import load_teachers
from ferlab.deep.io import model_meta, save_cnn
from ferlab.deep.model import architecture_from_config, build_cnn, copy_widened
from ferlab.deep.trainer import CNNTrainer, EpochCallback, TensorData
from ferlab.errors import ConfigError
from ferlab.runs import RunFolder
from ferlab.settings import CNNSettings
from ferlab.settings.cnn import validate_cnn_config

# What may differ between a CNN run and its --resume (the schedule depends on the epochs, so
# they may not): where the data lie (their contents are checked) and where the run computes.
CNN_MAY_CHANGE = ("data.path", "device.device", "device.threads")
# The CNN's own preprocessing, recorded with the data settings: pixels standardised by one mean/std.
PREPROCESSING = "cnn-standardize"


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


@dataclass
class RunPlan:
    """What a run trains on and what its model file records, known before any weight moves.

    ``train_images`` (N, 48, 48) uint8 and ``train_labels`` (N,); ``start`` is the model file of
    ``model.init`` (whose pixel scaling the run keeps) or None.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    mean: float
    std: float
    architecture: dict
    training_info: dict
    meta: dict
    start: object | None


def plan_run(settings: CNNSettings, splits) -> RunPlan:
    """The :class:`RunPlan` of a CNN config on ``splits``; a start file that does not fit the
    run is refused here."""
    from ferlab.data.split import REFIT_KEY, TRAINING_DATA_KEYS

    if tuple(splits.image_shape) != (48, 48):
        raise ConfigError(
            f"the CNN takes 48x48 grayscale images; {settings.data.dataset!r} has "
            f"{'x'.join(map(str, splits.image_shape))}"
        )
    refit = settings.data.refit
    train_images, train_labels = training_part(splits, refit=refit)
    mean, std = image_statistics(train_images)
    architecture = architecture_from_config(settings.model, len(splits.class_names))
    data_info = {**settings.data.model_dump(), "preprocessing": PREPROCESSING}
    training_info = {"data": {k: data_info[k] for k in TRAINING_DATA_KEYS}, "seed": settings.seed}
    if refit:
        training_info["data"][REFIT_KEY] = True
    start = None
    if settings.model.init:
        start = load_start(
            settings.model.init, architecture, splits.class_names, training_info, refit=refit
        )
        mean, std = start.mean, start.std
    meta = model_meta(
        architecture, splits.class_names, mean, std, settings.augment.crop, training_info
    )
    return RunPlan(train_images, train_labels, mean, std, architecture, training_info, meta, start)


def initial_network(settings: CNNSettings, plan: RunPlan) -> torch.nn.Module:
    """The network before training, from the run's seed: fresh, or the start file widened."""
    torch.manual_seed(settings.seed)
    module = build_cnn(plan.architecture)
    if plan.start is not None:
        copies = torch.Generator().manual_seed(settings.seed)
        copy_widened(plan.start.module, module, copies)
    return module


def report_start(trainer: CNNTrainer, plan: RunPlan, splits, other_split_teachers: int) -> None:
    """Say on stderr what the run trains on, and warn of a biased validation or slow bfloat16."""
    refit = trainer.settings.data.refit
    params = sum(p.numel() for p in trainer.module.parameters())
    held_out = (
        f"the validation part's {len(splits.val)} included (data.refit)"
        if refit
        else f"validating on {len(splits.val)}"
    )
    architecture = plan.architecture
    print(
        f"training on {len(plan.train_labels)} samples, {held_out}; "
        f"CNN widths {architecture['widths']} convs {architecture['convs']} "
        f"({params:,} parameters) on {trainer.device}",
        file=sys.stderr,
    )
    if other_split_teachers:
        print(
            f"warning: {other_split_teachers} of {len(trainer.teachers)} teachers trained on "
            "another split, which holds most of this run's validation part, so its validation "
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


def scores_on_tests(model_path: Path, device: torch.device, splits) -> dict[str, float]:
    """The saved model's accuracy on each test split, without and with flip TTA, and the
    first test split's as ``test_accuracy``."""
    from ferlab.deep.io import load_cnn

    classifier = load_cnn(model_path).to(device)
    scores = {}
    for name, part in splits.tests.items():
        scores[f"{name}_accuracy"] = float((classifier.predict(part.images) == part.labels).mean())
    classifier.tta = "flip"
    for name, part in splits.tests.items():
        scores[f"{name}_accuracy_flip_tta"] = float(
            (classifier.predict(part.images) == part.labels).mean()
        )
    if splits.tests:
        scores["test_accuracy"] = scores[f"{next(iter(splits.tests))}_accuracy"]
    return scores


def run_summary(trainer: CNNTrainer, history: dict, splits, folder: RunFolder) -> dict:
    """The run's ``summary.json`` before the test scores: validation accuracy, epochs, times,
    sizes and where it computed."""
    settings, device = trainer.settings, trainer.device
    summary = {
        "dataset": settings.data.dataset,
        "val_accuracy": trainer.evaluate(trainer.data.val_images, trainer.data.val_labels)[1],
        **folder.loop_summary(trainer, history, len(trainer.data.train_labels), len(splits.val)),
        "device": str(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
    }
    if settings.data.refit:
        summary["refit"] = True
    return summary


def run_cnn_training(
    settings: CNNSettings,
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
    """Train the configured CNN; write model, history, curves, config and summary to ``out_dir``
    (a :class:`~ferlab.runs.RunFolder`)."""
    from ferlab.data.split import load_splits, teachers_on_other_splits

    folder = RunFolder(out_dir, checkpoint_name=CHECKPOINT_NAME)
    torch_device = setup_device(device or settings.device.device, settings.device.threads)
    if splits is None:
        splits = load_splits(settings, strict=strict, use_cache=use_cache)
    plan = plan_run(settings, splits)
    teachers = load_teachers(settings.distill.teacher, torch_device, splits.class_names)
    other_split_teachers = teachers_on_other_splits(
        plan.training_info, [teacher.training_info for teacher in teachers]
    )
    # Only once every input file is read: a bad one leaves the run folder empty, not half made.
    folder.start(
        settings, splits, resume=resume, may_change=CNN_MAY_CHANGE, complete=validate_cnn_config
    )
    data = TensorData.from_arrays(
        plan.train_images, plan.train_labels, splits.val.images, splits.val.labels, torch_device
    )
    trainer = CNNTrainer(
        settings, initial_network(settings, plan), data, plan.mean, plan.std, device=torch_device,
        out_dir=folder.path, meta=plan.meta, verbose=verbose, epoch_callback=epoch_callback,
        teachers=teachers,
    )  # fmt: skip
    if verbose:
        report_start(trainer, plan, splits, other_split_teachers)
    history = trainer.resume(resume) if resume else trainer.train()
    save_cnn(trainer.module, plan.meta, folder.path / MODEL_NAME)
    folder.record(history, settings, best_epoch=trainer.best_epoch)
    summary = run_summary(trainer, history, splits, folder)
    if teachers:
        summary["teachers_on_other_splits"] = other_split_teachers
    if trainer.views_seconds is not None:
        summary["views_seconds"] = round(trainer.views_seconds, 2)
    summary.update(scores_on_tests(folder.path / MODEL_NAME, torch_device, splits))
    return folder.finish(summary)
