"""A CNN run's files: the checkpoint a run resumes from, and the model file it starts from.

A checkpoint holds weights, the best weights, the EMA, the optimizer state, RNG states, the
history and the teachers' logits on the views, in safetensors + JSON (no pickle).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from ferlab.deep.distillation import check_view_logits
from ferlab.deep.model import widens
from ferlab.deep.tensors import CHECKPOINT_FORMAT, FORMAT_VERSION, read_tensors, write_tensors
from ferlab.errors import ConfigError, ModelFileError
from ferlab.nn.tracking import CHECKPOINT_STEM, BestEpoch, restored_history

if TYPE_CHECKING:
    from ferlab.settings import CNNSettings

CHECKPOINT_NAME = f"{CHECKPOINT_STEM}.safetensors"
MODEL_NAME = "model.safetensors"


class TrainerState(Protocol):
    """What a checkpoint saves and restores of a trainer (:class:`ferlab.deep.trainer.CNNTrainer`)."""

    settings: CNNSettings
    meta: dict | None
    module: torch.nn.Module
    best: BestEpoch  # the best epoch, its weights (best.kept) and early stopping
    ema: object | None  # a ferlab.deep.ema.WeightAverage
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    device: torch.device
    teachers: list
    teacher_views: object | None  # ferlab.deep.distillation.TeacherViews
    stored_view_logits: torch.Tensor | None
    data: object  # ferlab.deep.trainer.TensorData
    epoch: int
    history: dict[str, list]


def prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors whose names start with ``prefix``, under their names without it."""
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def optimizer_tensors(state: dict) -> tuple[dict, dict[str, torch.Tensor]]:
    """An optimizer's ``state_dict()["state"]`` split into JSON (tensors as None) and tensors
    named ``optim.<index>.<key>``."""
    keys: dict[str, dict] = {}
    tensors: dict[str, torch.Tensor] = {}
    for index, entries in state.items():
        keys[str(index)] = {}
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value
                keys[str(index)][key] = None
            else:
                keys[str(index)][key] = value
    return keys, tensors


def optimizer_state(keys: dict, tensors: dict[str, torch.Tensor]) -> dict:
    """The optimizer state :func:`optimizer_tensors` split, put back together."""
    return {
        int(index): {
            key: tensors[f"optim.{index}.{key}"] if value is None else value
            for key, value in entries.items()
        }
        for index, entries in keys.items()
    }


def save_checkpoint(trainer: TrainerState, path: str | Path) -> Path:
    """Write everything a resumed ``trainer`` needs to go on as if never stopped."""
    tensors = {f"model.{k}": v for k, v in trainer.module.state_dict().items()}
    tensors.update({f"best.{k}": v for k, v in trainer.best.kept.items()})
    if trainer.ema is not None:
        tensors.update({f"ema.{k}": v for k, v in trainer.ema.state_dict().items()})
    optimizer = trainer.optimizer.state_dict()
    state_keys, optim = optimizer_tensors(optimizer["state"])
    tensors.update(optim)
    if trainer.teacher_views is not None:
        # The teachers' work, hours on a CPU; the views themselves are drawn again on resume.
        tensors["views.logits"] = trainer.teacher_views.logits.cpu()
    tensors["rng.data"] = trainer.generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    if trainer.device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(trainer.device)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "epoch": trainer.epoch,
        **trainer.best.state(),
        "ema_updates": None if trainer.ema is None else trainer.ema.updates,
        "history": trainer.history,
        "optimizer": {"param_groups": optimizer["param_groups"], "state": state_keys},
        "config": trainer.settings.model_dump(),
        "model_meta": trainer.meta,
    }
    return write_tensors(path, meta, tensors)


def load_checkpoint(trainer: TrainerState, path: str | Path) -> None:
    """Restore into ``trainer`` everything :func:`save_checkpoint` wrote."""
    meta, tensors = read_tensors(path, CHECKPOINT_FORMAT)
    if meta["config"]["model"] != trainer.settings.model.model_dump():
        raise ModelFileError(f"{path}: checkpoint of a different network than this config's")
    try:
        trainer.module.load_state_dict(prefixed(tensors, "model."), strict=True)
        trainer.best.kept = prefixed(tensors, "best.")
        if trainer.ema is not None:
            trainer.ema.load_state_dict(prefixed(tensors, "ema."), meta["ema_updates"])
        state = optimizer_state(meta["optimizer"]["state"], tensors)
        trainer.optimizer.load_state_dict(
            {"state": state, "param_groups": meta["optimizer"]["param_groups"]}
        )
        trainer.generator.set_state(tensors["rng.data"])
        torch.set_rng_state(tensors["rng.torch"])
        if trainer.device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], trainer.device)
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: checkpoint does not fit this network ({exc})") from None
    trainer.stored_view_logits = stored_view_logits(trainer, tensors.get("views.logits"), path)
    trainer.epoch = int(meta["epoch"])
    trainer.best.load(best_epoch_state(meta))
    trainer.history = restored_history(meta["history"], list(trainer.history))


def best_epoch_state(meta: dict) -> dict:
    """A checkpoint's :meth:`BestEpoch.state`; checkpoints written before the CNN's monitor
    was a setting watched validation accuracy and stored it as ``best_val_acc``."""
    if "best_score" in meta:
        return meta
    return {**meta, "monitor": "val_acc", "best_score": -float(meta["best_val_acc"])}


def stored_view_logits(
    trainer: TrainerState, logits: torch.Tensor | None, path
) -> torch.Tensor | None:
    """A checkpoint's teacher logits on the views (V, N, C) when this run uses views, checked
    to fit it; None when it has none or uses none."""
    views = int(trainer.settings.distill.views)
    if logits is None or not (trainer.teachers and views):
        return None
    return check_view_logits(
        logits,
        views=views,
        n_train=len(trainer.data.train_labels),
        n_classes=len(trainer.teachers[0].class_names),
        path=path,
    )


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
