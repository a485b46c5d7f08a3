"""SPACE files: TOML ranges over training-config keys, fixed settings and sequential groups."""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from pydantic import Field, TypeAdapter, ValidationError, model_validator

from ferlab.errors import ConfigError
from ferlab.settings import (
    Section,
    TrainSettings,
    check_value,
    describe_error,
    setting_keys,
    validate_config,
)
from ferlab.settings.loading import read_toml

PARAM_TYPES = ("int", "float", "log-float", "categorical", "layers")
DEFAULT_ORDER = ("lr", "dropout", "reg", "topology")


class RangeSpec(Section):
    """A numeric range: ``low`` <= ``high``."""

    @model_validator(mode="after")
    def _ordered(self):
        for lo, hi in (("low", "high"), ("units_low", "units_high")):
            a, b = getattr(self, lo, None), getattr(self, hi, None)
            if a is not None and b is not None and a > b:
                raise ValueError(f"{lo} ({a}) is greater than {hi} ({b})")
        if (getattr(self, "log", False) or self.type == "log-float") and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got low = {self.low}")
        return self


class IntRange(RangeSpec):
    type: Literal["int"]
    low: int
    high: int
    step: Annotated[int, Field(ge=1)] | None = None
    log: bool = False


class FloatRange(RangeSpec):
    type: Literal["float"]
    low: float
    high: float
    step: Annotated[float, Field(gt=0)] | None = None


class LogFloatRange(RangeSpec):
    type: Literal["log-float"]
    low: float
    high: float


class Choices(Section):
    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1)


class LayersRange(RangeSpec):
    type: Literal["layers"]
    low: Annotated[int, Field(ge=0)]
    high: int
    units_low: Annotated[int, Field(ge=1)]
    units_high: int


RANGE_TYPES = {
    "int": IntRange,
    "float": FloatRange,
    "log-float": LogFloatRange,
    "categorical": Choices,
    "layers": LayersRange,
}
PARAM_SPEC = TypeAdapter(
    Annotated[
        IntRange | FloatRange | LogFloatRange | Choices | LayersRange, Field(discriminator="type")
    ],
    config={"strict": True},
)


class GroupSpec(Section):
    params: list[str] = Field(min_length=1)
    off: list[str] = Field(default_factory=list)


class SearchOptions(Section):
    seed: Annotated[int, Field(ge=0)] = 0


class SpaceSettings(Section):
    """A SPACE file: fixed training settings, ranges, sequential groups, search options."""

    search: SearchOptions = Field(default_factory=SearchOptions)
    config: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    sequential: dict[str, GroupSpec] = Field(default_factory=dict)


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

    def distribution(self) -> BaseDistribution:
        """The Optuna distribution of a non-``layers`` parameter."""
        if self.type == "int":
            return IntDistribution(self.low, self.high, step=self.step or 1, log=self.log)
        if self.type == "float":
            return FloatDistribution(self.low, self.high, step=self.step)
        if self.type == "log-float":
            return FloatDistribution(self.low, self.high, log=True)
        return CategoricalDistribution(list(self.choices))

    def draw(self, sample: Callable[[str, BaseDistribution], Any]) -> None:
        """Sample this parameter's Optuna params, each by ``sample(name, distribution)``.

        The same names and distributions as :meth:`suggest`, without a trial object.
        """
        if self.type != "layers":
            sample(self.key, self.distribution())
            return
        layers = sample(f"{self.key}.layers", IntDistribution(self.low, self.high))
        units = IntDistribution(self.units_low, self.units_high)
        for i in range(layers):
            sample(f"{self.key}.units{i + 1}", units)

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

    def sample(self, seed: int) -> tuple[dict, dict[str, BaseDistribution]]:
        """Random Optuna ``(params, distributions)`` of one trial, drawn from ``seed`` alone."""
        sampler = optuna.samplers.RandomSampler(seed=seed)
        params: dict = {}
        distributions: dict[str, BaseDistribution] = {}

        def sample(name: str, distribution: BaseDistribution) -> Any:
            # The random sampler draws from the distribution alone: no study or trial is read.
            params[name] = sampler.sample_independent(None, None, name, distribution)
            distributions[name] = distribution
            return params[name]

        for param in self.params.values():
            param.draw(sample)
        return params, distributions

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


def _config_key(key: str, where: str) -> None:
    """Refuse a dotted key that is not a training-config key, suggesting the closest one."""
    keys = setting_keys(TrainSettings)
    if key not in keys:
        close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(keys)}"
        raise ConfigError(f"{where}: {key!r} is not a training-config key; {hint}")


def _spec_error(where: str, exc: ValidationError, spec: Any) -> ConfigError:
    error = exc.errors()[0]
    if error["type"].startswith("union_tag"):
        found = spec.get("type") if isinstance(spec, dict) else None
        return ConfigError(f"{where}: type must be one of {', '.join(PARAM_TYPES)}, got {found!r}")
    schema = RANGE_TYPES.get(error["loc"][0] if error["loc"] else None, RangeSpec)
    error = {**error, "loc": error["loc"][1:]}  # the tag of the union, not a key
    message = describe_error(error, schema).replace("unknown config key", "unknown key")
    message = message.replace("config table '(top level)': ", "").replace("config key ", "")
    return ConfigError(f"{where}: {message}")


def parse_param(key: str, spec: Any, source: str) -> Param:
    """One ``[params."section.key"]`` table, validated; errors name the key."""
    where = f'{source}: params."{key}"'
    _config_key(key, where)
    try:
        checked = PARAM_SPEC.validate_python(spec)
    except ValidationError as exc:
        raise _spec_error(where, exc, spec) from None
    if (checked.type == "layers") != (key == "model.hidden_dims"):
        raise ConfigError(f"{where}: 'model.hidden_dims' and only it takes type 'layers'")
    values = checked.model_dump()
    if "choices" in values:
        values["choices"] = tuple(values["choices"])
    return Param(key, **values)


def _check_param_types(params: dict[str, Param], source: str) -> None:
    """Refuse ranges whose ends the training config would not accept (the rules of ``train``)."""
    for key, param in params.items():
        for value in param.extremes():
            try:
                check_value(TrainSettings, key, value)
            except ConfigError as exc:
                raise ConfigError(f'{source}: params."{key}": {exc}') from None


def parse_space(raw: dict, source: str = "SPACE") -> SearchSpace:
    """Validate a SPACE mapping (as read from TOML) into a :class:`SearchSpace`."""
    try:
        checked = SpaceSettings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_error(exc.errors()[0], SpaceSettings)}") from None
    try:
        config = validate_config(checked.config, TrainSettings)
    except ConfigError as exc:
        raise ConfigError(f"{source}: config: {exc}") from None
    if not checked.params:
        raise ConfigError(f'{source}: params: needs at least one [params."section.key"] range')
    params = {key: parse_param(key, spec, source) for key, spec in checked.params.items()}
    _check_param_types(params, source)
    groups = {}
    for name, group in checked.sequential.items():
        where = f"{source}: sequential.{name}"
        for key in group.params:
            if key not in params:
                raise ConfigError(f"{where}: {key!r} is not in [params]")
        for key in group.off:
            _config_key(key, where)
        groups[name] = SequentialGroup(name, tuple(group.params), tuple(group.off))
    return SearchSpace(config, params, groups, checked.search.seed, copy.deepcopy(raw), source)


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a SPACE TOML file."""
    path = Path(path)
    space = parse_space(read_toml(path), str(path))
    if space.config["data"].get("path"):
        space.config["data"]["path"] = str(Path(space.config["data"]["path"]).expanduser())
    return space
