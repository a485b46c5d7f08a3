"""Training configurations: TOML files with defaults, validation and ``--set key=value`` overrides."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

from ferlab.errors import ConfigError

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "data": {
        "dataset": "digits",
        "path": None,
        "val_size": 0.1,
        "train_limit": None,
        "preprocessing": "standardize",
        "exclude_classes": [],
    },
    "model": {
        "hidden_dims": [100],
        "dropout": 0.0,
        "reg": 0.0,
        "weight_scale": None,
        "dtype": "float32",
    },
    "solver": {
        "optimizer": "sgd_momentum",
        "lr": 1e-3,
        "momentum": 0.9,
        "lr_decay": 1.0,
        "batch_size": 100,
        "epochs": 10,
        "patience": None,
        "flip": False,
        "shift": 0,
        "monitor": "val_loss",
    },
}
# Keys whose default is None accept these types.
NULLABLE_TYPES: dict[str, tuple[type, ...]] = {
    "data.path": (str,),
    "data.train_limit": (int,),
    "model.weight_scale": (float, int),
    "solver.patience": (int,),
}


def validate_keys(config: dict, defaults: dict, prefix: str = "") -> None:
    """Reject keys absent from ``defaults`` and values of the wrong type, naming the key."""
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if key not in defaults:
            raise ConfigError(
                f"unknown config key {dotted!r}; known: {', '.join(sorted(defaults))}"
            )
        default = defaults[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {dotted!r} must be a table")
            validate_keys(value, default, f"{dotted}.")
            continue
        if value is None:
            if default is not None and dotted not in NULLABLE_TYPES:
                raise ConfigError(f"config key {dotted!r} may not be empty")
            continue
        allowed = NULLABLE_TYPES.get(dotted) or (type(default),)
        if float in allowed:
            allowed = (*allowed, int)
        if isinstance(value, bool) and bool not in allowed:
            raise ConfigError(f"config key {dotted!r} must be {allowed[0].__name__}, got {value!r}")
        if not isinstance(value, allowed):
            if dotted == "data.val_size" and isinstance(value, int | float):
                continue
            raise ConfigError(
                f"config key {dotted!r} must be {allowed[0].__name__}, got {type(value).__name__}"
            )


def merge(base: dict, update: dict) -> dict:
    """Deep-merge ``update`` into a copy of ``base``."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_value(text: str) -> Any:
    """A ``--set`` value as TOML (numbers, booleans, lists), else as a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` overrides."""
    config = copy.deepcopy(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        dotted, text = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = config
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {dotted}: {key!r} is not a table")
        node[keys[-1]] = parse_value(text.strip())
    return config


def read_toml(path: str | Path) -> dict:
    """Parse a TOML file with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    data_path: str | None = None,
    defaults: dict | None = None,
) -> dict:
    """Defaults, then the TOML file, then ``--set`` overrides, then ``--data``; validated."""
    defaults = DEFAULTS if defaults is None else defaults
    raw = read_toml(path) if path is not None else {}
    raw = apply_overrides(raw, overrides or [])
    if data_path is not None:
        raw.setdefault("data", {})["path"] = str(data_path)
    validate_keys(raw, defaults)
    config = merge(defaults, raw)
    if config.get("data", {}).get("path"):
        config["data"]["path"] = str(Path(config["data"]["path"]).expanduser())
    return config
