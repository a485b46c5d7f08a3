"""The one settings schema: every config kind refuses each kind of bad value in one line, before
any data loads, and the documentation's annotated configs (docs/) list exactly the schema's keys."""

import re
import tomllib
from pathlib import Path

import pytest

from ferlab.cli import main
from ferlab.errors import ConfigError
from ferlab.settings import BaselineSettings, CNNSettings, TrainSettings, setting_keys
from ferlab.settings.loading import load_config

DOCS = Path(__file__).resolve().parents[1] / "docs"  # the site's pages (the README's former body)
MISSING_DATA = "/nonexistent/data.tar.gz"  # loading it would fail: errors must come first

# (schema, --set override, fragments the one-line message must hold)
CASES = [
    # fully connected training configs
    (TrainSettings, "solver.lr=-1", ["solver.lr", "greater than 0", "-1"]),
    (TrainSettings, "solver.lr=nan", ["solver.lr", "finite", "nan"]),
    (TrainSettings, "solver.batch_size=32.9", ["solver.batch_size", "valid integer", "32.9"]),
    (TrainSettings, 'solver.batch_size="16"', ["solver.batch_size", "valid integer", "'16'"]),
    (TrainSettings, "solver.epochs=0", ["solver.epochs", "greater than or equal to 1", "0"]),
    (TrainSettings, "solver.lr_decay=1.5", ["solver.lr_decay", "less than or equal to 1"]),
    (TrainSettings, "solver.momentum=1.0", ["solver.momentum", "less than 1"]),
    (TrainSettings, "solver.patience=0", ["solver.patience", "greater than or equal to 1"]),
    (TrainSettings, "solver.shift=-2", ["solver.shift", "greater than or equal to 0"]),
    (TrainSettings, "solver.flip=1", ["solver.flip", "valid boolean", "1"]),
    (TrainSettings, "solver.optimizer=adm", ["solver.optimizer", "'adam'", "'adm'"]),
    (TrainSettings, "solver.monitor=loss", ["solver.monitor", "'val_loss'", "'loss'"]),
    (TrainSettings, "solver.lrr=0.1", ["unknown config key 'solver.lrr'", "did you mean 'solver.lr'"]),
    (TrainSettings, "model.dropout=1.0", ["model.dropout", "less than 1"]),
    (TrainSettings, "model.reg=-0.1", ["model.reg", "greater than or equal to 0"]),
    (TrainSettings, "model.hidden_dims=[64,0]", ["model.hidden_dims[1]", "greater than or equal to 1"]),
    (TrainSettings, "model.hidden_dims=[32.9]", ["model.hidden_dims[0]", "valid integer"]),
    (TrainSettings, "model.weight_scale=0", ["model.weight_scale", "greater than 0"]),
    (TrainSettings, "model.dtype=float16", ["model.dtype", "'float32'", "'float16'"]),
    (TrainSettings, "data.preprocessing=zca", ["data.preprocessing", "'per_image'", "'zca'"]),
    (TrainSettings, "data.val_size=1.5", ["data.val_size", "fraction in (0, 1)", "1.5"]),
    (TrainSettings, "data.train_limit=0", ["data.train_limit", "greater than or equal to 1"]),
    (TrainSettings, "data.dataset=mnist", ["data.dataset", "fer2013", "'mnist'"]),
    (TrainSettings, "seed=-1", ["seed", "greater than or equal to 0"]),
    # CNN configs
    (CNNSettings, "model.widths=[]", ["model.widths", "at least 1 item"]),
    (CNNSettings, "model.convs=[1]", ["'model'", "convs must give one count per width (4)"]),
    (CNNSettings, "model.head_dropout=1.2", ["model.head_dropout", "less than 1"]),
    (CNNSettings, "augment.crop=60", ["augment.crop", "less than or equal to 48", "60"]),
    (CNNSettings, "augment.rotate=90.0", ["augment.rotate", "less than or equal to 45"]),
    (CNNSettings, "solver.schedule=step", ["solver.schedule", "'onecycle'", "'step'"]),
    (CNNSettings, "solver.optimizer=adam", ["solver.optimizer", "'adamw'", "'adam'"]),
    (CNNSettings, "solver.label_smoothing=1.0", ["solver.label_smoothing", "less than 1"]),
    (CNNSettings, "device.device=gpu", ["device.device", "auto, cpu, cuda or cuda:N", "'gpu'"]),
    (CNNSettings, "device.threads=-1", ["device.threads", "greater than or equal to 0"]),
    (CNNSettings, "augment.flipp=true", ["unknown config key 'augment.flipp'", "'augment.flip'"]),
    (CNNSettings, "solver.ema=1.0", ["solver.ema", "less than 1", "1.0"]),
    (CNNSettings, "solver.ema=-0.5", ["solver.ema", "greater than or equal to 0", "-0.5"]),
    (CNNSettings, "augment.erase=1.5", ["augment.erase", "less than or equal to 1", "1.5"]),
    (CNNSettings, "augment.mixup=-0.2", ["augment.mixup", "greater than or equal to 0", "-0.2"]),
    (CNNSettings, "augment.cutmix=true", ["augment.cutmix", "valid number", "True"]),
    (CNNSettings, "augment.mixpu=0.2", ["unknown config key 'augment.mixpu'", "'augment.mixup'"]),
    # scikit-learn baselines
    (BaselineSettings, "baseline.kind=svm", ["baseline.kind", "'random_forest'", "'svm'"]),
    (BaselineSettings, "data.train_limit=-5", ["data.train_limit", "greater than or equal to 1"]),
    (BaselineSettings, "baseline.kinds=x", ["unknown config key 'baseline.kinds'", "'baseline.kind'"]),
]  # fmt: skip

COMMANDS = {
    TrainSettings: lambda cfg: ["train", str(cfg), "--out", str(cfg.parent / "run")],
    CNNSettings: lambda cfg: ["cnn", "train", str(cfg), "--out", str(cfg.parent / "run")],
    BaselineSettings: lambda cfg: ["compare", str(cfg), str(cfg), "--folds", "2"],
}
CONFIG_TEXT = {
    TrainSettings: '[data]\ndataset = "fer2013"\n',
    CNNSettings: '[data]\ndataset = "fer2013"\n[model]\nwidths = [8, 16, 32, 64]\n',
    BaselineSettings: '[baseline]\nkind = "random_forest"\n[data]\ndataset = "fer2013"\n',
}


@pytest.mark.parametrize(("schema", "override", "fragments"), CASES)
def test_bad_values_are_one_line_naming_key_rule_and_value(schema, override, fragments, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(CONFIG_TEXT[schema])
    with pytest.raises(ConfigError) as info:
        load_config(config, [override], MISSING_DATA, schema=schema)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(config))
    for fragment in fragments:
        assert fragment in message, message


def test_a_refit_run_cannot_stop_early_on_the_part_it_trains_on(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(CONFIG_TEXT[CNNSettings])
    load_config(config, ["data.refit=true"], MISSING_DATA, schema=CNNSettings)
    with pytest.raises(ConfigError) as info:
        load_config(
            config, ["data.refit=true", "solver.patience=2"], MISSING_DATA, schema=CNNSettings
        )
    message = str(info.value)
    assert "\n" not in message and "solver.patience" in message and "data.refit" in message


@pytest.mark.parametrize("schema", [TrainSettings, CNNSettings, BaselineSettings])
def test_the_command_line_stops_before_loading_data(schema, tmp_path, capsys):
    if schema is CNNSettings:
        pytest.importorskip("torch")
    config = tmp_path / "c.toml"
    config.write_text(CONFIG_TEXT[schema])
    override = {TrainSettings: "solver.lr=-1", CNNSettings: "solver.lr=-1"}.get(
        schema, "baseline.kind=svm"
    )
    setter = "--set-a" if schema is BaselineSettings else "--set"
    argv = [*COMMANDS[schema](config), setter, override, "--data", MISSING_DATA]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ferlab: error: ") and "Traceback" not in err
    assert "no such file" not in err and ("solver.lr" in err or "baseline.kind" in err), err
    assert not (tmp_path / "run").exists()


def test_a_search_space_is_held_to_the_same_rules(tmp_path, capsys):
    space = tmp_path / "space.toml"
    space.write_text(
        '[config]\n[config.data]\ndataset = "digits"\n[config.solver]\nepochs = 2\n'
        '[params."model.dropout"]\ntype = "float"\nlow = 0.0\nhigh = 1.0\n'
    )
    argv = ["search", "random", str(space), "--trials", "3", "--study-dir", str(tmp_path / "s")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert 'params."model.dropout"' in err and "less than 1" in err and err.count("\n") == 1
    space.write_text(
        space.read_text().replace("high = 1.0", "high = 0.5").replace("epochs = 2", "patience = 0")
    )
    assert main(argv) == 2
    assert "solver.patience" in capsys.readouterr().err


def test_every_shipped_config_is_valid():
    root = Path(__file__).resolve().parents[1] / "src" / "ferlab" / "configs"
    for path in sorted(root.glob("*.toml")):
        schema = CNNSettings if "cnn" in path.name else TrainSettings
        load_config(path, schema=schema)
    for path in sorted((root / "baselines").glob("*.toml")):
        load_config(path, schema=BaselineSettings)


def readme_toml_blocks() -> list[dict]:
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(DOCS.rglob("*.md")))
    return [tomllib.loads(block) for block in re.findall(r"```toml\n(.*?)```", text, re.S)]


def flat_keys(table: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in table.items():
        if isinstance(value, dict) and key != "params":
            keys += flat_keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


@pytest.mark.parametrize("schema", [TrainSettings, CNNSettings])
def test_the_readme_config_reference_lists_exactly_the_schema(schema):
    documented = [set(flat_keys(block)) for block in readme_toml_blocks()]
    assert set(setting_keys(schema)) in documented, (
        f"no docs ```toml block lists exactly {schema.__name__}'s keys; missing from the closest: "
        f"{sorted(set(setting_keys(schema)) - max(documented, key=lambda d: len(d & set(setting_keys(schema)))))}"
    )


def test_a_loaded_config_is_a_frozen_settings_object_and_with_values_checks_its_copy(tmp_path):
    import pydantic

    from ferlab.settings.loading import with_values

    path = tmp_path / "fc.toml"
    path.write_text('[solver]\nlr = 0.05\n[data]\npath = "~/faces.tar.gz"\n', encoding="utf-8")
    settings = load_config(path, ["model.hidden_dims=[32, 16]"])
    assert isinstance(settings, TrainSettings)
    assert settings.solver.lr == 0.05 and settings.model.hidden_dims == [32, 16]
    assert settings.data.path == str(Path("~/faces.tar.gz").expanduser())
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        settings.solver.lr = 1.0
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        settings.seed = 3
    changed = with_values(settings, {"solver.lr": 0.01, "seed": 3})
    assert (changed.solver.lr, changed.seed) == (0.01, 3)
    assert (settings.solver.lr, settings.seed) == (0.05, 0)  # the original is untouched
    with pytest.raises(ConfigError, match=r"config key 'solver.lr' must be greater than 0"):
        with_values(settings, {"solver.lr": -1.0})
    with pytest.raises(ConfigError, match="unknown config key 'solver.lrr'"):
        with_values(settings, {"solver.lrr": 0.1})
    cnn = load_config(None, ["solver.epochs=2"], schema=CNNSettings)
    assert isinstance(cnn, CNNSettings) and cnn.solver.epochs == 2
