"""Nothing silently wrong on real inputs (issue 45): damaged archives and caches, a list with a
missing path, a damaged video, rows that join back to their files, messages that name the
right option. Every case is built from real files written here."""

import json
import re

import numpy as np
from PIL import Image

from ferlab.cli import main

DIGITS = ["--set", "solver.epochs=2", "--set", "model.hidden_dims=[16]", "--quiet"]


def test_train_prints_accuracies_as_percentages(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "digits_fc", "--out", str(run), *DIGITS]) == 0
    out = capsys.readouterr().out
    printed = json.loads(out[: out.index("\n}\n") + 2])
    assert re.fullmatch(r"\d{1,3}\.\d\d%", printed["val_accuracy"]), printed
    assert re.fullmatch(r"\d{1,3}\.\d\d%", printed["train_accuracy"]), printed
    saved = json.loads((run / "summary.json").read_text())
    assert 0 < saved["val_accuracy"] <= 1  # the file keeps fractions
    assert printed["val_accuracy"] == f"{100 * saved['val_accuracy']:.2f}%"


def test_evaluate_twice_replaces_its_default_report_but_not_foreign_files(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "digits_fc", "--out", str(run), *DIGITS]) == 0
    argv = ["evaluate", "--model", str(run / "model.npz"), "--split", "test"]
    assert main(argv) == 0
    first = (run / "eval-test" / "report.json").stat().st_mtime_ns
    assert main(argv) == 0  # the README's command, run again
    assert (run / "eval-test" / "report.json").stat().st_mtime_ns >= first
    (run / "eval-test" / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "use --force" in err and "\n" not in err.strip()
    assert (run / "eval-test" / "notes.txt").read_text() == "mine"


def test_a_non_empty_annotate_folder_is_named_as_annotate(tmp_path, capsys):
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    code = main(["predict", str(tmp_path / "a.png"), "--detector", "none", "--annotate",
                 str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("ferlab: error: --annotate ") and "--out" not in err


def test_every_command_takes_quiet(tmp_path, capsys):
    from ferlab.cli import build_parser

    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "a.png"), "--detector", "none", "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("a.png  face 0")
    parser = build_parser()
    for argv in (
        ["predict", "x.png", "--quiet"],
        ["evaluate", "--model", "m.npz", "--split", "test", "--quiet"],
        ["serve", "--quiet"],
        ["train", "digits_fc", "--out", "r", "--quiet"],
        ["configs", "list", "--quiet"],
    ):
        assert parser.parse_args(argv).quiet is True, argv
