"""Reading configurations: TOML files, ``--set key=value`` overrides and ``--data``, checked against
the settings schema of :mod:`ferlab.settings.schema`."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

from ferlab.configs import resolve_config
from ferlab.errors import ConfigError
from ferlab.settings.schema import (
    SectionT,
    TrainSettings,
    defaults,
    parse_config,
)

DEFAULTS: dict[str, Any] = defaults(TrainSettings)


def merge(base: dict, update: dict) -> dict:
    """Deep-merge ``update`` into a copy of ``base``."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs (keys of either side)."""
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key}")
    return changed


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
    """Parse a TOML file, or the shipped config of that name (``digits_fc``: see
    :mod:`ferlab.configs`), with clear errors."""
    path = resolve_config(path)
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
    *,
    schema: type[SectionT] = TrainSettings,
) -> SectionT:
    """Defaults, then the TOML file, then ``--set`` overrides, then ``--data``, checked against
    ``schema`` (a fully connected training config unless told otherwise) before any data loads:
    the schema's frozen settings object."""
    raw = read_toml(path) if path is not None else {}
    raw = apply_overrides(raw, overrides or [])
    if data_path is not None:
        if not isinstance(raw.setdefault("data", {}), dict):
            raise ConfigError("config key 'data' must be a table")
        raw["data"]["path"] = str(data_path)
    try:
        settings = parse_config(raw, schema)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path is not None else str(exc)) from None
    if settings.data.path:
        settings = with_values(settings, {"data.path": str(Path(settings.data.path).expanduser())})
    return settings


def with_values(settings: SectionT, values: dict[str, Any]) -> SectionT:
    """A copy of ``settings`` with the dotted keys of ``values`` changed (``{"solver.lr":
    0.01}``), checked again against its schema."""
    config = settings.model_dump()
    for dotted, value in values.items():
        *tables, name = dotted.split(".")
        node = config
        for key in tables:
            node = node[key]
        if name not in node:
            raise ConfigError(f"unknown config key {dotted!r}")
        node[name] = value
    return parse_config(config, type(settings))
