"""SPACE files: the shipped ones parse; bad ones are rejected with a message naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferlab.errors import ConfigError
from ferlab.search.space import load_space, parse_space

SPACES = Path(__file__).resolve().parent.parent / "src" / "ferlab" / "configs" / "spaces"


def base_space(**params) -> dict:
    return {
        "config": {"data": {"dataset": "digits"}, "solver": {"epochs": 2}},
        "params": params or {"solver.lr": {"type": "log-float", "low": 1e-3, "high": 1e-1}},
    }


@pytest.mark.parametrize("name", ["digits_demo.toml", "fer2013_random.toml"])
def test_shipped_spaces_parse(name):
    space = load_space(SPACES / name)
    assert set(space.groups) == {"lr", "dropout", "reg", "topology"}
    assert space.groups["dropout"].off == ("model.reg",)
    assert space.params["model.hidden_dims"].type == "layers"


def test_report_space_matches_the_report():
    space = load_space(SPACES / "fer2013_random.toml")
    p = space.params
    assert (p["model.hidden_dims"].low, p["model.hidden_dims"].high) == (1, 3)
    assert (p["model.hidden_dims"].units_low, p["model.hidden_dims"].units_high) == (100, 500)
    assert (p["solver.batch_size"].low, p["solver.batch_size"].high) == (50, 200)
    assert (p["solver.lr_decay"].low, p["solver.lr_decay"].high) == (0.9, 1.0)
    assert (p["model.dropout"].low, p["model.dropout"].high) == (0.0, 0.5)
    assert (p["solver.momentum"].low, p["solver.momentum"].high) == (0.1, 0.9)
    assert p["solver.lr"].type == "log-float"
    assert space.config["solver"]["patience"] == 4 and space.config["solver"]["epochs"] == 20


@pytest.mark.parametrize(
    ("raw", "needles"),
    [
        ({**base_space(), "serach": {}}, ["'serach'"]),
        (base_space(**{"solver.lrr": {"type": "float", "low": 0, "high": 1}}), ["solver.lrr"]),
        (base_space(**{"solver.lr": {"type": "float", "low": 0.1, "high": 1, "scale": 2}}),
         ["solver.lr", "'scale'"]),
        (base_space(**{"solver.lr": {"type": "float", "low": 0.5, "high": 0.1}}),
         ["solver.lr", "low (0.5) is greater than high (0.1)"]),
        (base_space(**{"solver.lr": {"type": "log-float", "low": 0.0, "high": 0.1}}),
         ["solver.lr", "low > 0"]),
        (base_space(**{"model.reg": {"type": "log-float", "low": -1e-3, "high": 0.1}}),
         ["model.reg", "low > 0"]),
        (base_space(**{"solver.batch_size": {"type": "float", "low": 10.0, "high": 20.0}}),
         ["solver.batch_size", "must be a valid integer"]),
        (base_space(**{"solver.lr": {"type": "float", "low": "small", "high": 0.1}}),
         ["solver.lr", "'low' must be a valid number"]),
        (base_space(**{"solver.batch_size": {"type": "int", "low": 1.5, "high": 20}}),
         ["solver.batch_size", "'low' must be a valid integer"]),
        (base_space(**{"solver.lr": {"type": "uniform", "low": 0, "high": 1}}),
         ["solver.lr", "type"]),
        (base_space(**{"solver.optimizer": {"type": "categorical", "choices": ["sgd", 3]}}),
         ["solver.optimizer", "must be 'sgd'"]),
        (base_space(**{"model.hidden_dims": {"type": "layers", "low": 3, "high": 1,
                                             "units_low": 10, "units_high": 20}}),
         ["model.hidden_dims", "low (3) is greater than high (1)"]),
        ({**base_space(), "config": {"solver": {"epoch": 3}}}, ["config", "'solver.epoch'"]),
        ({**base_space(), "config": {"solver": {"epochs": "3"}}}, ["config", "'solver.epochs'"]),
        ({**base_space(), "sequential": {"lr": {"params": ["solver.momentum"]}}},
         ["sequential.lr", "'solver.momentum'"]),
        ({**base_space(), "sequential": {"lr": {"params": ["solver.lr"], "of": []}}},
         ["sequential.lr", "'sequential.lr.of'"]),
        ({**base_space(), "search": {"seed": 1.5}}, ["search.seed"]),
    ],
)  # fmt: skip
def test_bad_spaces_are_rejected_naming_the_key(raw, needles):
    with pytest.raises(ConfigError) as info:
        parse_space(raw, "bad.toml")
    message = str(info.value)
    assert message.startswith("bad.toml")
    for needle in needles:
        assert needle in message


def test_bad_space_file_through_the_cli(tmp_path, capsys):
    from ferlab.cli import main

    path = tmp_path / "bad.toml"
    path.write_text('[params."solver.lr"]\ntype = "log-float"\nlow = 0\nhigh = 1\n')
    code = main(["search", "random", str(path), "--trials", "1", "--study-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("ferlab: error:") and "solver.lr" in err and "low > 0" in err
    assert not (tmp_path / "bad-random").exists()


def test_subspace_holds_fixed_values():
    space = parse_space(base_space(**{
        "solver.lr": {"type": "log-float", "low": 1e-3, "high": 1e-1},
        "model.dropout": {"type": "float", "low": 0.0, "high": 0.5},
    }))  # fmt: skip
    sub = space.subspace(("model.dropout",), {"solver.lr": 0.05, "model.reg": 0.0})
    assert list(sub.params) == ["model.dropout"]
    assert sub.config["solver"]["lr"] == 0.05
    assert space.config["solver"]["lr"] != 0.05  # the original is untouched
