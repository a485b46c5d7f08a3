"""The NumPy engine's own settings (ferlab.nn.settings) and the config schema agree: the same
defaults, the same choices, the same values accepted and refused with the same one-line message;
the engine imports nothing above it."""

import ast
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from ferlab.errors import ConfigError
from ferlab.nn import FullyConnectedNet, Solver
from ferlab.nn.settings import RULES, ModelSettings, SolverSettings, checked, problem_of
from ferlab.settings import (
    FCModelSettings,
    FCSolverSettings,
    TrainSettings,
    fc_engine_settings,
    validate_arguments,
    validate_config,
)

NN = Path(__file__).resolve().parents[1] / "src" / "ferlab" / "nn"
SCHEMA = {ModelSettings: FCModelSettings, SolverSettings: FCSolverSettings}
PROBES = [
    None, True, False, -1, 0, 1, 2, 16, 17, 100, -0.5, 0.0, 0.5, 0.999, 1.0, 1.5, 1e-3, 32.9,
    math.nan, math.inf, "x", "sgd", "adam", "adamw", "momentum", "val_acc", "val_loss",
    "train_loss", "float32", "float64", "float16", [], [4], [4, 0], [2.5], (8, 8), "16",
]  # fmt: skip


def schema_problem(kind, name, value):
    try:
        validate_arguments(SCHEMA[kind], "X", **{name: value})
    except ConfigError as exc:
        return str(exc).removeprefix("X: ")
    return None


@pytest.mark.parametrize(
    ("kind", "name"), [(kind, name) for kind, rules in RULES.items() for name in rules]
)
def test_the_engine_and_the_schema_accept_and_refuse_the_same_values(kind, name):
    for value in PROBES:
        if value == "16" or (isinstance(value, str) and name == "flip"):
            continue  # the schema's lax mode reads numbers and booleans from strings; Python not
        engine, schema = problem_of(kind, name, value), schema_problem(kind, name, value)
        assert (engine is None) == (schema is None), (name, value, engine, schema)
        if engine is not None and not isinstance(value, str):  # the schema tries to parse those
            assert engine == schema, (name, value)


def test_the_schema_takes_the_engines_defaults():
    defaults = validate_config({}, TrainSettings)
    model, solver = fc_engine_settings(TrainSettings())
    assert model == ModelSettings() and solver == SolverSettings()
    assert dataclasses.asdict(solver) == defaults["solver"]
    assert {**dataclasses.asdict(model), "hidden_dims": [100]} == defaults["model"]
    assert set(RULES[ModelSettings]) == set(FCModelSettings.model_fields)
    assert set(RULES[SolverSettings]) == set(FCSolverSettings.model_fields)


def test_engine_settings_are_frozen_and_checked_with_their_owner_named():
    settings = checked(SolverSettings, "Solver", lr=0.1, epochs=np.int64(3))
    assert settings.lr == 0.1 and settings.epochs == 3 and settings.batch_size == 100
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.lr = 1.0
    with pytest.raises(ConfigError, match=r"^Solver: 'lr' must be greater than 0, got -1$"):
        Solver(FullyConnectedNet(4, [3], 2), {}, lr=-1)
    with pytest.raises(ConfigError, match=r"^FullyConnectedNet: 'hidden_dims\[1\]' must be"):
        FullyConnectedNet(4, [3, 0], 2)
    with pytest.raises(ConfigError, match="unknown setting 'rate'"):
        checked(SolverSettings, "Solver", rate=1)


def test_a_net_and_a_solver_built_from_settings_match_their_keyword_twins():
    rng = np.random.default_rng(0)
    data = {
        "X_train": rng.normal(size=(40, 6)), "y_train": rng.integers(0, 3, 40),
        "X_val": rng.normal(size=(10, 6)), "y_val": rng.integers(0, 3, 10),
    }  # fmt: skip
    model_settings = ModelSettings(hidden_dims=(5,), reg=0.01, dtype="float64")
    solver_settings = SolverSettings(lr=0.05, epochs=2, batch_size=8, optimizer="adam")
    histories = []
    for net, make in (
        (
            FullyConnectedNet.from_settings(6, 3, model_settings, seed=1),
            lambda m: Solver.from_settings(m, data, solver_settings, verbose=False),
        ),
        (
            FullyConnectedNet(6, [5], 3, reg=0.01, dtype=np.float64, seed=1),
            lambda m: Solver(m, data, lr=0.05, epochs=2, batch_size=8, optimizer="adam",
                             verbose=False),
        ),
    ):  # fmt: skip
        histories.append(make(net).train()["train_loss"])
    assert histories[0] == histories[1] and len(histories[0]) == 2


def test_the_engine_imports_nothing_above_it():
    """ferlab.nn may import itself, errors, arrays, files, metrics, calibration and progress."""
    allowed = ("ferlab.nn", "ferlab.errors", "ferlab.common.arrays", "ferlab.common.files", "ferlab.evaluation.metrics",
               "ferlab.evaluation.calibration", "ferlab.common.progress", "ferlab.modelfile")  # fmt: skip
    for path in NN.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("ferlab")
            ):
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("ferlab")]
            else:
                continue
            for name in names:
                assert name == "ferlab" or name.startswith(allowed), f"{path.name} imports {name}"
