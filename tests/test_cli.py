"""The command line's conventions, the same for every command (tried as a new user would)."""

import json
import shutil

import numpy as np
from PIL import Image

from ferlab.cli import build_parser, main
from ferlab.data.fer2013 import CLASS_NAMES

DIGITS = ["--set", "solver.epochs=2", "--set", "model.hidden_dims=[16]", "--quiet"]


def write_fer_folder(root, per_class=6):
    """A small FER2013 image folder: train/<emotion>/Training_*.png, test/... Public/Private."""
    rng = np.random.default_rng(0)
    for folder, prefixes in (("train", ["Training"]), ("test", ["PublicTest", "PrivateTest"])):
        for c, name in enumerate(CLASS_NAMES):
            target = root / folder / name
            target.mkdir(parents=True)
            for prefix in prefixes:
                for i in range(per_class):
                    pixels = rng.integers(0, 60, (48, 48)) + 25 * c
                    Image.fromarray(pixels.astype(np.uint8)).save(target / f"{prefix}_{c}{i}.png")
    return root


def test_train_refuses_a_non_empty_run_folder_unless_force(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "digits_fc", "--out", str(run), *DIGITS]) == 0
    first = (run / "model.npz").read_bytes()
    capsys.readouterr()
    assert main(["train", "digits_fc", "--out", str(run), *DIGITS]) == 2
    assert "not empty; use --force" in capsys.readouterr().err
    assert (run / "model.npz").read_bytes() == first  # nothing overwritten
    assert main(["train", "digits_fc", "--out", str(run), *DIGITS, "--force"]) == 0


def test_a_failed_run_leaves_no_empty_folder(tmp_path, capsys):
    run = tmp_path / "deep" / "run"
    config = tmp_path / "fer.toml"
    config.write_text('[data]\ndataset = "fer2013"\n')
    argv = ["train", str(config), "--out", str(run), "--data", str(tmp_path / "missing.csv")]
    assert main(argv) == 2
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "deep").exists()


def test_a_data_path_that_cannot_apply_is_an_error(tmp_path, capsys):
    argv = ["train", "digits_fc", "--out", str(tmp_path / "r"), "--data", "x.csv"]
    assert main(argv) == 2
    assert "'digits' ships with its library and takes no --data" in capsys.readouterr().err


def test_a_shipped_config_without_data_asks_for_it(tmp_path, capsys):
    assert main(["train", "cifar10_fc400", "--out", str(tmp_path / "r")]) == 2
    assert "needs its location: give --data PATH" in capsys.readouterr().err


def test_evaluate_uses_the_run_s_recorded_data_path(tmp_path, capsys):
    data = write_fer_folder(tmp_path / "fer")
    config = tmp_path / "fer.toml"
    config.write_text(
        '[data]\ndataset = "fer2013"\nval_size = 7\n[model]\nhidden_dims = [8]\n'
        "[solver]\nepochs = 1\n"
    )
    run = tmp_path / "run"
    assert main(["train", str(config), "--data", str(data), "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(run / "model.npz"), "--split", "public"]) == 0
    assert "fer2013 public_test (42 samples)" in capsys.readouterr().out
    assert (run / "eval-public" / "report.json").is_file()
    shutil.move(data, tmp_path / "moved")
    argv = ["evaluate", "--model", str(run / "model.npz"), "--split", "private"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "records the data path" in err and "give --data" in err
    assert main([*argv, "--data", str(tmp_path / "moved")]) == 0


def test_evaluate_takes_every_model_kind_and_refuses_options_it_cannot_apply(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "digits_fc", "--out", str(run), *DIGITS]) == 0
    capsys.readouterr()
    model = str(run / "model.npz")
    assert main(["evaluate", "--model", model, "--split", "test", "--tta", "flip"]) == 2
    assert "--tta applies to CNN models" in capsys.readouterr().err
    assert main(["evaluate", "--model", model, "--split", "test", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0.5 < report["accuracy"] <= 1
    assert main(["evaluate", "--model", model, "--split", "test"]) == 0  # replaces its report
    assert main(["evaluate", "--model", model, "--split", "test", "--force"]) == 0


def test_search_takes_set_overrides(tmp_path, capsys):
    argv = [
        "search",
        "random",
        "spaces/digits_demo",
        "--trials",
        "2",
        "--workers",
        "0",
    ]
    argv += ["--study-dir", str(tmp_path), "--quiet", "--set", "solver.epochs=1"]
    assert main([*argv, "--set", "solver.epochs=0"]) == 2
    assert "solver.epochs" in capsys.readouterr().err
    assert main(argv) == 0
    assert "best trial" in capsys.readouterr().out


def test_help_texts_show_defaults_and_model_options_are_named(capsys):
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices
    assert "(default: 25)" in subcommands["predict"].format_help()
    assert "(default: 5)" in subcommands["compare"].format_help()
    for name in ("evaluate", "predict", "extend"):
        assert "--model MODEL" in subcommands[name].format_help(), name
    for name in ("train", "evaluate", "extend", "compare"):
        assert "--out DIR" in subcommands[name].format_help(), name


def test_epoch_lines_without_bars_off_a_terminal_and_none_with_quiet(tmp_path, capsys):
    loud = [a for a in DIGITS if a != "--quiet"]
    assert main(["train", "digits_fc", "--out", str(tmp_path / "a"), *loud]) == 0
    err = capsys.readouterr().err
    assert "epoch 1/2  loss" in err and "train acc" in err and "%" in err
    assert "batch/s" not in err and "it/s" not in err  # no bar frames in a captured log
    assert main(["train", "digits_fc", "--out", str(tmp_path / "b"), *DIGITS]) == 0
    assert "epoch 1/2" not in capsys.readouterr().err
