"""The NumPy engine's own settings: two frozen dataclasses and the rules their values follow.

The engine imports nothing above it: the config files' schema (:mod:`ferlab.settings`) takes
its defaults and choices from here and converts a validated config into these objects. Rules
are declared once per field, as in scikit-learn's parameter validation, and checked in one
place; a bad value is one line: ``Solver: 'lr' must be greater than 0, got -1``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from ferlab.errors import ConfigError
from ferlab.nn.tracking import DEFAULT_MONITOR, MONITOR_NAMES

OPTIMIZERS = ("sgd", "sgd_momentum", "nesterov", "adam")
MONITORS = tuple(MONITOR_NAMES)
DTYPES = ("float32", "float64")

# A rule returns None for a good value, else what it must be ("must be greater than 0").
Rule = Callable[[Any], "str | None"]


def number(
    *, gt: float | None = None, ge: float | None = None, lt: float | None = None,
    le: float | None = None, integer: bool = False,
) -> Rule:  # fmt: skip
    """A finite real number (a whole one with ``integer``) within the bounds given."""

    def check(value: Any) -> str | None:
        if not isinstance(value, numbers.Real):  # bools too, as Python counts them
            return "must be a valid integer" if integer else "must be a valid number"
        if not math.isfinite(value):
            return "must be a finite number"
        if integer and value != int(value):
            return "must be a valid integer, got a number with a fractional part"
        bounds = (
            (gt, lambda b: value > b, "greater than"),
            (ge, lambda b: value >= b, "greater than or equal to"),
            (lt, lambda b: value < b, "less than"),
            (le, lambda b: value <= b, "less than or equal to"),
        )
        for bound, holds, words in bounds:
            if bound is not None and not holds(bound):
                shown = int(bound) if float(bound).is_integer() else bound
                return f"must be {words} {shown}"
        return None

    return check


def one_of(choices: tuple[str, ...]) -> Rule:
    """One of ``choices``."""
    quoted = [repr(choice) for choice in choices]
    words = f"{', '.join(quoted[:-1])} or {quoted[-1]}" if len(quoted) > 1 else quoted[0]

    def check(value: Any) -> str | None:
        return None if isinstance(value, str) and value in choices else f"must be {words}"

    return check


BOOLEAN_RULE = "must be a valid boolean, unable to interpret input"


def boolean(value: Any) -> str | None:
    """True or False (or 0 and 1, as Python counts them)."""
    if isinstance(value, bool) or value in (0, 1):
        return None
    return BOOLEAN_RULE if isinstance(value, int | str) else "must be a valid boolean"


def optional(rule: Rule) -> Rule:
    """None, or a value ``rule`` accepts."""
    return lambda value: None if value is None else rule(value)


def list_of(rule: Rule) -> Callable[[Any], tuple[str, str] | str | None]:
    """A list or tuple whose every item ``rule`` accepts; a failure names the item's index."""

    def check(value: Any):
        if not isinstance(value, list | tuple):
            return "must be a valid list"
        for index, item in enumerate(value):
            if (problem := rule(item)) is not None:
                return f"[{index}]", problem, item
        return None

    return check


PROBABILITY = number(ge=0.0, lt=1.0)
COUNT = number(ge=1, integer=True)


@dataclass(frozen=True)
class ModelSettings:
    """A :class:`~ferlab.nn.FullyConnectedNet`'s architecture and regularisation."""

    hidden_dims: tuple[int, ...] = (100,)  # hidden layer widths; () is softmax regression
    dropout: float = 0.0  # probability of dropping a unit
    reg: float = 0.0  # L2 strength: 0.5 * reg * sum(W**2)
    weight_scale: float | None = None  # initial weight std (None: He)
    dtype: str = "float32"


@dataclass(frozen=True)
class SolverSettings:
    """How a :class:`~ferlab.nn.Solver` trains: update rule, schedule, stopping, augmentation.

    ``monitor`` is what early stopping and best-epoch restore watch: ``val_loss`` (the default
    of the NumPy engine) or ``val_acc``.
    """

    optimizer: str = "sgd_momentum"
    lr: float = 1e-3
    momentum: float = 0.9  # sgd_momentum, nesterov
    lr_decay: float = 1.0  # lr factor after each epoch
    batch_size: int = 100
    epochs: int = 10
    patience: int | None = None  # epochs without improvement before stopping
    flip: bool = False  # mirror a random half of each batch
    shift: int = 0  # move each image by up to N pixels
    monitor: str = DEFAULT_MONITOR["fully_connected"]


RULES: dict[type, dict[str, Callable]] = {
    ModelSettings: {
        "hidden_dims": list_of(COUNT),
        "dropout": PROBABILITY,
        "reg": number(ge=0.0),
        "weight_scale": optional(number(gt=0.0)),
        "dtype": one_of(DTYPES),
    },
    SolverSettings: {
        "optimizer": one_of(OPTIMIZERS),
        "lr": number(gt=0.0),
        "momentum": PROBABILITY,
        "lr_decay": number(gt=0.0, le=1.0),
        "batch_size": COUNT,
        "epochs": COUNT,
        "patience": optional(COUNT),
        "flip": boolean,
        "shift": number(ge=0, le=16, integer=True),
        "monitor": one_of(MONITORS),
    },
}


def problem_of(kind: type, name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for field ``name`` of settings ``kind`` (``'lr' must be
    greater than 0, got -1``), or None when it is right."""
    found = RULES[kind][name](value)
    if found is None:
        return None
    if isinstance(found, tuple):  # an item of a list: its index, rule and value
        index, found, value = found
        return f"{name + index!r} {found}, got {value!r}"
    return f"{name!r} {found}, got {value!r}"


def checked(kind: type, owner: str, **values: Any):
    """``kind(**values)`` once every value follows its rule; else a ConfigError naming the
    ``owner`` (``Solver``), the field, the rule and the value. Fields not given keep defaults."""
    for field in fields(kind):
        if field.name in values and (problem := problem_of(kind, field.name, values[field.name])):
            raise ConfigError(f"{owner}: {problem}")
    unknown = set(values) - {field.name for field in fields(kind)}
    if unknown:
        raise ConfigError(f"{owner}: unknown setting {sorted(unknown)[0]!r}")
    if "hidden_dims" in values:
        values["hidden_dims"] = tuple(int(width) for width in values["hidden_dims"])
    return kind(**values)
