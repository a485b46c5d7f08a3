"""The CNN's TOML configuration: its schema is :class:`ferlab.settings.schema.CNNSettings`."""

from __future__ import annotations

from typing import Any

from ferlab.settings.loading import load_config
from ferlab.settings.schema import CNNSettings, defaults, validate_config

CNN_DEFAULTS: dict[str, Any] = defaults(CNNSettings)


def validate_cnn_config(config: dict) -> dict:
    """A CNN config table completed with defaults and checked, as plain data (a stored run's
    config, completed before a resume compares it); raises ConfigError naming the key."""
    return validate_config(config, CNNSettings)


def load_cnn_config(
    path, overrides: list[str] | None = None, data_path: str | None = None
) -> CNNSettings:
    """Defaults, the TOML file, ``--set`` overrides and ``--data``, checked: frozen settings."""
    return load_config(path, overrides, data_path, schema=CNNSettings)
