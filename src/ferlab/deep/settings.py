"""The CNN's TOML configuration: defaults and the checks beyond types."""

from __future__ import annotations

from typing import Any

from ferlab.errors import ConfigError

CNN_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "data": {
        "dataset": "fer2013",
        "path": None,
        "val_size": 0.1,
        "train_limit": None,
        "exclude_classes": [],
    },
    "model": {
        "widths": [32, 64, 128, 256],
        "convs": [1, 1, 2, 1],
        "dropout": 0.1,
        "head_dropout": 0.3,
    },
    "augment": {
        "crop": 44,
        "flip": True,
        "rotate": 10.0,
        "scale": 0.1,
    },
    "solver": {
        "optimizer": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 128,
        "epochs": 30,
        "schedule": "onecycle",
        "warmup": 0.15,
        "label_smoothing": 0.1,
        "patience": None,
        "eval_batch_size": 512,
    },
    "device": {
        "device": "auto",
        "threads": 0,
        "amp": True,
        "channels_last": True,
    },
}

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine", "constant")


def validate_cnn_config(config: dict) -> dict:
    """Check the values the type checks of :func:`ferlab.config.load_config` cannot."""
    model, augment, solver = config["model"], config["augment"], config["solver"]
    if not model["widths"] or any(not isinstance(w, int) or w < 1 for w in model["widths"]):
        raise ConfigError("model.widths must be a non-empty list of positive integers")
    if len(model["convs"]) != len(model["widths"]) or any(
        not isinstance(n, int) or n < 1 for n in model["convs"]
    ):
        raise ConfigError("model.convs must give a positive number of convolutions per width")
    for key in ("dropout", "head_dropout"):
        if not 0 <= model[key] < 1:
            raise ConfigError(f"model.{key} must be in [0, 1), got {model[key]}")
    if not 8 <= augment["crop"] <= 48:
        raise ConfigError(f"augment.crop must be between 8 and 48, got {augment['crop']}")
    if not 0 <= augment["rotate"] <= 45 or not 0 <= augment["scale"] < 0.5:
        raise ConfigError("augment.rotate must be in [0, 45] degrees and augment.scale in [0, 0.5)")
    if solver["optimizer"] not in OPTIMIZERS:
        raise ConfigError(
            f"solver.optimizer must be one of {OPTIMIZERS}, got {solver['optimizer']!r}"
        )
    if solver["schedule"] not in SCHEDULES:
        raise ConfigError(f"solver.schedule must be one of {SCHEDULES}, got {solver['schedule']!r}")
    for key in ("lr", "batch_size", "epochs", "eval_batch_size"):
        if solver[key] <= 0:
            raise ConfigError(f"solver.{key} must be positive, got {solver[key]}")
    if not 0 <= solver["warmup"] < 1 or not 0 <= solver["label_smoothing"] < 1:
        raise ConfigError("solver.warmup and solver.label_smoothing must be in [0, 1)")
    if solver["patience"] is not None and solver["patience"] < 1:
        raise ConfigError("solver.patience must be a positive number of epochs")
    if config["device"]["threads"] < 0:
        raise ConfigError("device.threads must be 0 (PyTorch's default) or a positive count")
    return config


def load_cnn_config(path, overrides: list[str] | None = None, data_path: str | None = None) -> dict:
    """Defaults, the TOML file, ``--set`` overrides and ``--data``, validated."""
    from ferlab.config import load_config

    return validate_cnn_config(load_config(path, overrides, data_path, defaults=CNN_DEFAULTS))
