"""Nothing silently wrong on real inputs (issue 45): damaged archives and caches, a list with a
missing path, a damaged video, rows that join back to their files, messages that name the
right option. Every case is built from real files written here."""

import json
import re
from pathlib import Path

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
    assert capsys.readouterr().out.startswith(f"{tmp_path}/a.png  face 0")
    parser = build_parser()
    for argv in (
        ["predict", "x.png", "--quiet"],
        ["evaluate", "--model", "m.npz", "--split", "test", "--quiet"],
        ["serve", "--quiet"],
        ["train", "digits_fc", "--out", "r", "--quiet"],
        ["configs", "list", "--quiet"],
    ):
        assert parser.parse_args(argv).quiet is True, argv


def test_a_missing_path_in_a_list_is_skipped_like_any_bad_input(tmp_path, capsys, monkeypatch):
    from skimage import data as skdata

    monkeypatch.chdir(tmp_path)
    Image.fromarray(skdata.astronaut()).save("a.png")
    Path("notes.jpg").write_text("not a photo")
    Path("empty.jpg").write_bytes(b"")
    assert main(["predict", "a.png", "notes.jpg", "missing.jpg", "empty.jpg"]) == 0
    captured = capsys.readouterr()
    assert [line.split()[0] for line in captured.out.splitlines()] == ["a.png"]
    assert "skipped missing.jpg: no such file or folder" in captured.err
    assert "notes.jpg" in captured.err and "empty.jpg" in captured.err
    assert main(["predict", "missing.jpg", "gone.jpg"]) == 2  # nothing could be read
    assert main(["predict", "missing.jpg"]) == 2
    assert capsys.readouterr().err.strip().endswith("missing.jpg: no such file or folder")


def write_clip(path, frames=125):
    import cv2
    from skimage import data as skdata

    face = cv2.resize(skdata.astronaut(), (256, 256))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (256, 256))
    for i in range(frames):
        writer.write(cv2.cvtColor(np.roll(face, i, axis=1), cv2.COLOR_RGB2BGR))
    writer.release()


def ferlab_command(*args: str):
    """``ferlab ARGS`` in a process of its own (FFmpeg's log level is set once per process)."""
    import subprocess
    import sys

    code = "import sys; from ferlab.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300
    )


def test_a_damaged_video_says_which_frames_were_lost(tmp_path):
    clip = tmp_path / "clip.mp4"
    write_clip(clip)
    data = bytearray(clip.read_bytes())
    rng = np.random.default_rng(0)
    for start in (len(data) // 4, len(data) // 2, 3 * len(data) // 4):  # a few damaged ranges
        data[start : start + 2000] = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    done = ferlab_command("predict", str(damaged), "--every", "25", "--format", "jsonl")
    assert done.returncode == 0, done.stderr
    out, err = done.stdout, done.stderr
    rows = [json.loads(line) for line in out.splitlines()]
    times = [row["time"] for row in rows]
    assert times == sorted(times) and len(rows) >= 2 and all(r["face"] == 0 for r in rows)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err  # ferlab's one warning, none of FFmpeg's own messages
    assert re.search(r"damaged\.mp4: frames at \d+\.\d\d-\d+\.\d\d s could not be decoded", err)
    assert "of the 125 frames its header gives could be read" in err
    # The whole clip reads without a warning, at its own times.
    done = ferlab_command("predict", str(clip), "--every", "25", "--format", "jsonl")
    out, err = done.stdout, done.stderr
    assert done.returncode == 0 and [json.loads(line)["time"] for line in out.splitlines()] == [
        0.0,
        1.0,
        2.0,
        3.0,
        4.0,
    ]
    assert err.strip() == ""


def test_rows_and_annotated_files_name_nested_files_by_their_path(tmp_path, capsys, monkeypatch):
    from skimage import data as skdata

    monkeypatch.chdir(tmp_path)
    for folder in ("tree/a/b", "tree/c"):
        Path(folder).mkdir(parents=True)
        Image.fromarray(skdata.astronaut()).save(f"{folder}/face.jpg")
    argv = ["predict", "tree", "--recursive", "--format", "csv", "--annotate", "out"]
    assert main(argv) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["tree/a/b/face.jpg", "tree/c/face.jpg"]
    assert Path("out/a/b/face.jpg.annotated.png").is_file()  # the input tree, mirrored
    assert Path("out/c/face.jpg.annotated.png").is_file()
    Path("tree/c/bad.jpg").write_text("x")
    assert main(["predict", "tree", "--recursive", "--format", "csv"]) == 0
    assert "skipped tree/c/bad.jpg: " in capsys.readouterr().err  # the same name in warnings
