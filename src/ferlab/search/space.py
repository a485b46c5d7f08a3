"""SPACE files: TOML ranges over training-config keys, fixed settings and sequential groups."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferlab.config import DEFAULTS, read_toml
from ferlab.errors import ConfigError
from ferlab.settings import TrainSettings, check_value, validate_config

PARAM_TYPES = ("int", "float", "log-float", "categorical", "layers")
# Keys each parameter type takes (besides ``type``); the first tuple is required.
PARAM_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "int": (("low", "high"), ("step", "log")),
    "float": (("low", "high"), ("step",)),
    "log-float": (("low", "high"), ()),
    "categorical": (("choices",), ()),
    "layers": (("low", "high", "units_low", "units_high"), ()),
}
TOP_KEYS = ("search", "config", "params", "sequential")
SEARCH_KEYS = {"seed": int}
GROUP_KEYS = ("params", "off")
DEFAULT_ORDER = ("lr", "dropout", "reg", "topology")


@dataclass(frozen=True)
class Param:
    """One searched training-config key (dotted, e.g. ``solver.lr``) and its range."""

    key: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    choices: tuple = ()
    units_low: int | None = None
    units_high: int | None = None

    def suggest(self, trial) -> Any:
        """Sample this parameter on an Optuna trial; return the training-config value."""
        if self.type == "int":
            return trial.suggest_int(
                self.key, self.low, self.high, step=self.step or 1, log=self.log
            )
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, step=self.step)
        if self.type == "log-float":
            return trial.suggest_float(self.key, self.low, self.high, log=True)
        if self.type == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        layers = trial.suggest_int(f"{self.key}.layers", self.low, self.high)
        return [
            trial.suggest_int(f"{self.key}.units{i + 1}", self.units_low, self.units_high)
            for i in range(layers)
        ]

    def from_params(self, params: dict) -> Any:
        """This parameter's config value from an Optuna trial's ``params``."""
        if self.type != "layers":
            return params[self.key]
        layers = params[f"{self.key}.layers"]
        return [params[f"{self.key}.units{i + 1}"] for i in range(layers)]

    def extremes(self) -> list[Any]:
        """Values at the range's ends, to type-check against the training config."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "layers":
            return [[self.units_low] * self.low, [self.units_high] * self.high]
        return [self.low, self.high]


@dataclass(frozen=True)
class SequentialGroup:
    """A step of a sequential search: the keys it searches and the keys it switches off (zero)."""

    name: str
    params: tuple[str, ...]
    off: tuple[str, ...] = ()


@dataclass
class SearchSpace:
    """A parsed SPACE file: the fixed training config, the searched parameters and the groups."""

    config: dict
    params: dict[str, Param]
    groups: dict[str, SequentialGroup] = field(default_factory=dict)
    seed: int = 0
    raw: dict = field(default_factory=dict)
    source: str = ""

    def suggest(self, trial) -> dict:
        """Sample every parameter on ``trial``; return ``{config key: value}``."""
        return {key: param.suggest(trial) for key, param in self.params.items()}

    def values_from_params(self, params: dict) -> dict:
        """``{config key: value}`` from a finished trial's Optuna ``params``."""
        return {key: param.from_params(params) for key, param in self.params.items()}

    def trial_config(self, values: dict) -> dict:
        """The full training config of a trial: fixed settings with ``values`` applied."""
        return apply_values(self.config, values)

    def subspace(self, keys: tuple[str, ...], fixed: dict) -> SearchSpace:
        """Only ``keys`` searched; ``fixed`` ({config key: value}) applied to the config."""
        return SearchSpace(
            apply_values(self.config, fixed),
            {key: self.params[key] for key in keys},
            seed=self.seed,
            raw=self.raw,
            source=self.source,
        )


def apply_values(config: dict, values: dict) -> dict:
    """A copy of ``config`` with dotted ``{section.key: value}`` entries set."""
    config = copy.deepcopy(config)
    for dotted, value in values.items():
        section, key = dotted.split(".", 1)
        config[section][key] = copy.deepcopy(value)
    return config


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _config_key(key: str, where: str) -> None:
    section, _, name = key.partition(".")
    if (
        section not in DEFAULTS
        or not isinstance(DEFAULTS[section], dict)
        or name not in DEFAULTS[section]
    ):
        known = [f"{s}.{k}" for s, v in DEFAULTS.items() if isinstance(v, dict) for k in v]
        raise _fail(where, f"{key!r} is not a training-config key; known: {', '.join(known)}")


def parse_param(key: str, spec: Any, source: str) -> Param:
    """One ``[params."section.key"]`` table, validated; errors name the key."""
    where = f'{source}: params."{key}"'
    _config_key(key, where)
    if not isinstance(spec, dict):
        raise _fail(where, 'must be a table such as { type = "float", low = 0, high = 1 }')
    kind = spec.get("type")
    if kind not in PARAM_TYPES:
        raise _fail(where, f"type must be one of {', '.join(PARAM_TYPES)}, got {kind!r}")
    required, optional = PARAM_KEYS[kind]
    for name in spec:
        if name != "type" and name not in required + optional:
            raise _fail(
                where,
                f"unknown key {name!r} for type {kind!r}; "
                f"allowed: {', '.join(required + optional)}",
            )
    for name in required:
        if name not in spec:
            raise _fail(where, f"type {kind!r} needs {name!r}")
    if kind == "layers" and key != "model.hidden_dims":
        raise _fail(where, "type 'layers' is only for 'model.hidden_dims'")
    if kind != "layers" and key == "model.hidden_dims":
        raise _fail(where, "'model.hidden_dims' takes type 'layers'")
    if kind == "categorical":
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise _fail(where, "choices must be a non-empty list")
        return Param(key, kind, choices=tuple(choices))
    integer = kind in ("int", "layers")
    for name in required:
        value = spec[name]
        if integer and not (isinstance(value, int) and not isinstance(value, bool)):
            raise _fail(where, f"{name} must be an integer, got {value!r}")
        if not _is_number(value) or not math.isfinite(value):
            raise _fail(where, f"{name} must be a number, got {value!r}")
    pairs = [("low", "high")] + ([("units_low", "units_high")] if kind == "layers" else [])
    for lo, hi in pairs:
        if spec[lo] > spec[hi]:
            raise _fail(where, f"{lo} ({spec[lo]}) is greater than {hi} ({spec[hi]})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise _fail(where, f"log must be true or false, got {log!r}")
    if (kind == "log-float" or log) and spec["low"] <= 0:
        raise _fail(where, f"a log range needs low > 0, got low = {spec['low']}")
    if kind == "layers" and (spec["low"] < 0 or spec["units_low"] < 1):
        raise _fail(where, "layers need low >= 0 and units_low >= 1")
    step = spec.get("step")
    if step is not None and (
        not _is_number(step) or step <= 0 or (integer and not isinstance(step, int))
    ):
        raise _fail(
            where, f"step must be a positive {'integer' if integer else 'number'}, got {step!r}"
        )
    if kind == "log-float":
        return Param(key, kind, float(spec["low"]), float(spec["high"]))
    if kind == "float":
        return Param(key, kind, float(spec["low"]), float(spec["high"]), step=step)
    if kind == "int":
        return Param(key, kind, spec["low"], spec["high"], step=step, log=log)
    return Param(
        key,
        kind,
        spec["low"],
        spec["high"],
        units_low=spec["units_low"],
        units_high=spec["units_high"],
    )


def _check_param_types(config: dict, params: dict[str, Param], source: str) -> None:
    """Reject ranges whose values the training config would not accept (e.g. float batch sizes)."""
    for key, param in params.items():
        section, name = key.split(".", 1)
        for value in param.extremes():
            try:
                check_value(TrainSettings, key, value)
            except ConfigError as exc:
                raise _fail(f'{source}: params."{key}"', str(exc)) from None


def parse_groups(raw: Any, params: dict[str, Param], source: str) -> dict[str, SequentialGroup]:
    """The ``[sequential.<group>]`` tables: which params each step searches and switches off."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _fail(f"{source}: sequential", "must be a table of groups")
    groups = {}
    for name, spec in raw.items():
        where = f"{source}: sequential.{name}"
        if not isinstance(spec, dict):
            raise _fail(where, "must be a table with 'params' (and optional 'off')")
        for key in spec:
            if key not in GROUP_KEYS:
                raise _fail(where, f"unknown key {key!r}; allowed: {', '.join(GROUP_KEYS)}")
        keys = spec.get("params")
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise _fail(where, "params must be a non-empty list of searched keys")
        for key in keys:
            if key not in params:
                raise _fail(where, f"{key!r} is not in [params]")
        off = spec.get("off", [])
        if not isinstance(off, list) or not all(isinstance(k, str) for k in off):
            raise _fail(where, "off must be a list of config keys")
        for key in off:
            _config_key(key, where)
        groups[name] = SequentialGroup(name, tuple(keys), tuple(off))
    return groups


def parse_space(raw: dict, source: str = "SPACE") -> SearchSpace:
    """Validate a SPACE mapping (as read from TOML) into a :class:`SearchSpace`."""
    for key in raw:
        if key not in TOP_KEYS:
            raise _fail(source, f"unknown key {key!r}; allowed: {', '.join(TOP_KEYS)}")
    search = raw.get("search", {})
    if not isinstance(search, dict):
        raise _fail(f"{source}: search", "must be a table")
    for key, value in search.items():
        if key not in SEARCH_KEYS:
            raise _fail(
                f"{source}: search", f"unknown key {key!r}; allowed: {', '.join(SEARCH_KEYS)}"
            )
        if not isinstance(value, SEARCH_KEYS[key]) or isinstance(value, bool):
            raise _fail(
                f"{source}: search.{key}", f"must be {SEARCH_KEYS[key].__name__}, got {value!r}"
            )
    fixed = raw.get("config", {})
    if not isinstance(fixed, dict):
        raise _fail(f"{source}: config", "must be a table of training-config settings")
    try:
        config = validate_config(fixed, TrainSettings)
    except ConfigError as exc:
        raise _fail(f"{source}: config", str(exc)) from None
    params_raw = raw.get("params", {})
    if not isinstance(params_raw, dict) or not params_raw:
        raise _fail(f"{source}: params", 'needs at least one [params."section.key"] range')
    params = {key: parse_param(key, spec, source) for key, spec in params_raw.items()}
    _check_param_types(config, params, source)
    groups = parse_groups(raw.get("sequential"), params, source)
    return SearchSpace(config, params, groups, search.get("seed", 0), copy.deepcopy(raw), source)


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a SPACE TOML file."""
    path = Path(path)
    space = parse_space(read_toml(path), str(path))
    if space.config["data"].get("path"):
        space.config["data"]["path"] = str(Path(space.config["data"]["path"]).expanduser())
    return space
