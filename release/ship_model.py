"""Ship a trained CNN inside ferlab: export it to ONNX, measure the exported file, write its card.

    python release/ship_model.py RUN_DIR --data ../shared/data/fer2013-images.tar.gz \
        --command "ferlab cnn train fer2013_cnn_cpu --data ... --out RUN_DIR"

Writes ``src/ferlab/assets/fer2013_cnn.onnx``, ``model_card.json`` and ``MODEL_CARD.md`` there, and
``benchmarks/results/shipped_model.json``. Every figure is measured on the ONNX file itself with
ONNX Runtime, on PublicTest and PrivateTest (never used to choose anything).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "src" / "ferlab" / "assets"
# The card's copy beside the benchmark records it reads (benchmarks/results/, as before the move).
RECORD = ROOT / "benchmarks" / "results" / "shipped_model.json"
CHECK_EVERY = 7  # the model card's check sample: every 7th PublicTest face in file-name order
CALIBRATION = 512  # Training faces that set the int8 activation ranges

LIMITS = """\
- FER2013's faces were gathered by web image search: mostly frontal, 48x48 grayscale, often posed,
  and not balanced by age, ethnicity or gender. No claim is made about fairness across groups,
  and accuracy on faces unlike these (profiles, occlusion, children, low light) is unmeasured.
- Seven labels, one per image; FER2013's authors estimated human accuracy on it at about 65%.
  The model names the expression a face shows, not what the person feels.
- Disgust has 436 training images of 28,709; with fear, its recall is the lowest of the seven.
{seeds}
- The face detector (BlazeFace, verified by both of its networks) still misses some printed,
  halftone and strongly turned faces and finds faces in some drawings (see "On real photos").
  Use `--detector none` for images that are already face crops.
"""


def seeds_line(seeds: dict | None, seed: int) -> str:
    """The limits' line on seeds: the spread measured over the config's seeds, when recorded."""
    if not seeds:
        return f"- One training run (seed {seed}): the spread over seeds is not measured for this model."
    over = seeds["over_runs"]
    public, private = over["public_none"], over["private_none"]
    return (
        f"- One of {public['n']} training runs of the same config (seed {seed}); over them, "
        f"PublicTest {100 * public['mean']:.2f}% (sd {100 * public['std']:.2f} points)\n"
        f"  and PrivateTest {100 * private['mean']:.2f}% (sd {100 * private['std']:.2f} points), "
        "float networks."
    )


def training_data_line(held_out: dict) -> str:
    """What the model trained on: FER2013's Training split less its validation part, or all of
    it when the run refit."""
    part = f"10% held out for validation, stratified, seed {held_out['split_seed']}"
    if held_out.get("refit"):
        return (
            f"FER2013 Training (28,709 faces), all of it: the {part}, chose the settings and was "
            "then trained on too in the last part (`data.refit`)"
        )
    return f"FER2013 Training (28,709 faces); {part}"


def teacher_files(config: dict) -> list[str]:
    """The model files the run's ``distill.teacher`` names (none, one or several)."""
    from ferlab.deep.distillation import teacher_paths

    return teacher_paths(config.get("distill", {}).get("teacher"))


def calibration_faces(training) -> np.ndarray:
    """The Training faces (uint8, CALIBRATION x 48 x 48) that set an int8 file's activation
    ranges: a seeded draw, in file order."""
    pick = np.random.default_rng(0).choice(len(training), CALIBRATION, replace=False)
    return training.images[np.sort(pick)]


def check_sample(public):
    """The fixed sample the test suite re-measures: every 7th PublicTest face by file name."""
    order = np.argsort(public.names)
    return order[::CHECK_EVERY]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?")
    parser.add_argument("--data")
    parser.add_argument("--command", help="the training command, to record")
    parser.add_argument(
        "--refresh",
        action="store_true",
        help="only re-read the benchmark records and the detectors' framing into the shipped "
        "card and rewrite MODEL_CARD.md (no model needed)",
    )
    parser.add_argument("--name", default="fer2013_cnn")
    parser.add_argument(
        "--seeds", help="cnn_record.py's record of the config's seeds, for the spread over them"
    )
    args = parser.parse_args()
    if args.refresh:
        card = json.loads((ASSETS / "model_card.json").read_text())
        write_card(refreshed(card))
        return
    if not (args.run_dir and args.data and args.command):
        parser.error("RUN_DIR, --data and --command are needed (or --refresh)")

    from ferlab.data import load_fer2013
    from ferlab.data.split import REFIT_KEY, held_out_part, teachers_on_other_splits
    from ferlab.deep import load_cnn
    from ferlab.deep.export import export_onnx
    from ferlab.evaluation.metrics import evaluation_report
    from ferlab.inference.models import load_model
    from ferlab.inference.onnx_model import quantize_onnx

    run = Path(args.run_dir)
    cnn = load_cnn(run / "model.safetensors")
    target = ASSETS / "fer2013_cnn.onnx"
    data = load_fer2013(args.data)
    with tempfile.TemporaryDirectory() as folder:
        float_path = Path(folder) / "float.onnx"
        check = export_onnx(cnn, float_path, name=args.name)
        float_model = load_model(float_path)
        # int8 runs 2.6x faster on this CPU; ranges calibrated on Training faces only.
        quantize_onnx(float_path, target, calibration_faces(data.split("training")))
    model = load_model(target)
    summary = json.loads((run / "summary.json").read_text())
    history = json.loads((run / "history.json").read_text())
    config = json.loads((run / "config.json").read_text())
    seeds = json.loads(Path(args.seeds).read_text()) if args.seeds else None
    # A teacher trained on another split has learned from part of this run's validation faces;
    # a run that refit trained on them itself and has no validation figure.
    held_out = held_out_part(cnn.training_info)
    refit = bool(held_out.get(REFIT_KEY))
    other_split_teachers = teachers_on_other_splits(
        cnn.training_info, [load_cnn(path).training_info for path in teacher_files(config)]
    )

    accuracy, recall, float_accuracy = {}, {}, {}
    for split in ("public_test", "private_test"):
        part = data.split(split)
        float_right = float_model.predict(part.images) == part.labels
        float_accuracy[split] = round(float(float_right.mean()), 4)
        report = evaluation_report(part.labels, model.predict(part.images), part.class_names)
        accuracy[split] = round(report.accuracy, 4)
        recall[split] = {
            c: round(float(v), 4)
            for c, v in zip(part.class_names, report.raw.per_class["recall"], strict=True)
        }
    public = data.split("public_test")
    sample = check_sample(public)
    sample_accuracy = float((model.predict(public.images[sample]) == public.labels[sample]).mean())
    card = {
        "name": args.name,
        "file": target.name,
        "bytes": target.stat().st_size,
        "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
        "parameters": model.parameter_count,
        "classes": model.class_names,
        "input": {
            "shape": [48, 48],
            "pixels": "grayscale 0..255 (ITU-R 601 luma of RGB photos)",
            "framing": framing_line(),
            "preprocessing": f"inside the graph: standardised, centre crop {cnn.crop}x{cnn.crop}",
        },
        "training": {
            "data": training_data_line(held_out),
            "command": args.command,
            "config": config,
            "epochs": len(history["val_acc"]),
            "seconds": round(float(sum(history["seconds"])), 1),
            # distill.views: the teachers' logits made once before the epochs, beside their time
            "views_seconds": summary.get("views_seconds"),
            "validation_accuracy": None if refit else round(float(summary["val_accuracy"]), 4),
            "teachers_trained_on_other_splits": other_split_teachers,
        },
        "accuracy": accuracy,
        "float_model_accuracy": float_accuracy,
        # quantize_onnx's own description, stored in the file, so the two cannot drift apart.
        "quantization": f"{model.meta['quantization']} (Training faces drawn with seed 0; ONNX "
        "Runtime)",
        "recall": recall,
        "check_sample": {
            "split": "public_test",
            "every": CHECK_EVERY,
            "order": "file name",
            "size": int(len(sample)),
            "accuracy": round(sample_accuracy, 4),
        },
        "onnx_check": check,
        "seeds_line": seeds_line(seeds, config["seed"]),
    }
    card = refreshed(card)
    write_card(card)
    print(
        json.dumps(
            {k: card[k] for k in ("bytes", "parameters", "accuracy", "check_sample")}, indent=2
        )
    )


BENCHMARKS = {
    "pipeline": "pipeline_accuracy.json",
    "speed": "recognizer_speed.json",
    "detector_photos": "detector_photos.json",
    "calibration": "tta_calibration.json",
}


def framing_line() -> str:
    """How each detector's box becomes the model's input, from the detectors' own framing."""
    from ferlab.vision.blazeface import BlazeFaceDetector
    from ferlab.vision.framing import Framing

    blaze, haar = BlazeFaceDetector.framing, Framing()
    return (
        f"a square {blaze.scale} x the longer side of the blazeface detector's box (centred "
        f"{-blaze.shift[1]:g} box sides above the box's centre, turned so that the eyes are level)"
        f", or {haar.scale} x the haar detector's box, resized to 48x48 (FER2013's framing, "
        "measured on Training faces)"
    )


def refreshed(card: dict) -> dict:
    """The card with the current benchmark records, framing and limits."""
    card = dict(card)
    for key, name in BENCHMARKS.items():
        record = RECORD.parent / name
        if record.is_file():
            card[key] = json.loads(record.read_text())
    if "calibration" in card:  # the card keeps the figures, the record the reliability bins
        tests = card["calibration"]["tests"]
        card["calibration"] = dict(
            card["calibration"],
            tests={split: dict(t, reliability=None) for split, t in tests.items()},
        )
    card["input"] = dict(card["input"], framing=framing_line())
    seeds = card.get("seeds_line") or card["limits"].split("\n- One of")[1].join(["- One of", ""])
    card["seeds_line"] = seeds.split("\n- The face detector")[0].rstrip("\n")
    card["limits"] = LIMITS.format(seeds=card["seeds_line"])
    return card


def write_card(card: dict) -> None:
    (ASSETS / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    (ASSETS / "MODEL_CARD.md").write_text(markdown(card))
    RECORD.write_text(json.dumps(card, indent=2) + "\n")


def file_name(path: str) -> str:
    """A model file's name for the card; a run's model.safetensors with its run folder's name."""
    parts = Path(path).parts
    return "/".join(parts[-2:]) if parts[-1] == "model.safetensors" else parts[-1]


def pct(fraction: float) -> str:
    return f"{100 * fraction:.2f}%"


def real_photos(card: dict) -> str:
    """The face detector and the pipeline and speed figures, when their records exist."""
    lines = ["## On real photos", ""]
    photos = (card.get("detector_photos") or {}).get("detectors", {})
    if photos:
        lines += [
            "The default face detector is BlazeFace (Google MediaPipe's CNN, Apache-2.0, shipped "
            "inside ferlab as ONNX; see THIRD_PARTY_NOTICES.md), each face verified by both of "
            "its networks; `--detector haar` is OpenCV's Haar cascade. "
            "Face detectors on real photos whose faces were counted by eye "
            "(`benchmarks/detector_photos.py`, photos from registry packages):",
            "",
            "| detector | faces found | false faces | on photos without a face |",
            "|---|---:|---:|---:|",
        ]
        for name, r in photos.items():
            lines.append(
                f"| {name.replace(':', ' --min-face ')} | {r['found']} of {r['faces']} "
                f"({100 * r['recall']:.1f}%) | "
                f"{r['false_detections']} | {r['false_on_photos_without_faces']} of "
                f"{r['photos'] - r['photos_with_faces']} photos |"
            )
        lines.append("")
    pipeline = card.get("pipeline") or {}
    rows = []
    for turn, suffix in (("upright", ""), ("turned up to 30 degrees", "_turned30")):
        for name in ("blazeface", "haar"):
            e = (pipeline.get(f"evaluation{suffix}_{name}") or {}).get("evaluation")
            if e:
                rows.append(
                    f"| {name} | {turn} | {100 * e['detection_recall']:.1f}% | "
                    f"{e['false_per_100_scenes']:.2f} | "
                    f"{pct(e['pipeline_accuracy_on_found'])} | "
                    f"{pct(e['crop_accuracy_on_same_faces'])} |"
                )
    if rows:
        lines += [
            "PrivateTest faces placed, enlarged, on real photos (`benchmarks/pipeline_accuracy.py`,"
            " 3,589 faces): faces found, false faces per 100 scenes, and the whole pipeline's "
            "accuracy on the found faces beside the same faces' original upright crops:",
            "",
            "| detector | faces | found | false / 100 scenes | pipeline | crops |",
            "|---|---|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    speed = card.get("speed")
    if speed:
        faces = speed["faces_per_second"]
        per_photo = ", ".join(
            f"{r['detector'].split()[0]} {r['photos_per_second']:.1f} at {r['size']}"
            for r in speed["photo_pipeline"].values()
        )
        lines += [
            f"Speed on one CPU thread (`benchmarks/recognizer_speed.py`): "
            f"{faces['onnxruntime']:,.0f} faces/s classified; photos/s end to end: {per_photo}.",
            "",
        ]
    return "\n".join(lines)


def calibration(card: dict) -> str:
    """Test-time augmentation, calibration and the "uncertain" threshold, from the record of
    benchmarks/tta_calibration.py, when it exists."""
    record = card.get("calibration")
    if not record:
        return ""
    by_tta, speed = record["tests_by_tta"], record["faces_per_second"]
    rows = []
    for tta in ("none", "flip"):
        public, private = by_tta["public_test"][tta], by_tta["private_test"][tta]
        rows.append(
            f"| {tta} | {pct(public['uncalibrated']['accuracy'])} | "
            f"{pct(private['uncalibrated']['accuracy'])} | {speed[tta]:,.0f} | "
            f"{pct(public['uncalibrated']['ece'])} / {pct(private['uncalibrated']['ece'])} | "
            f"{pct(public['calibrated']['ece'])} / {pct(private['calibrated']['ece'])} |"
        )
    public = record["tests"]["public_test"]
    floor = public["ece_noise_floor"]
    coverage = "\n".join(
        f"| {r['min_confidence']:.1f} | {pct(r['coverage'])} | {pct(r['accuracy'])} |"
        for r in public["risk_coverage"]
    )
    at80 = public["coverage_at_80"]
    temperatures = ", ".join(f"{k} {v:.3f}" for k, v in record["temperature"].items())
    reliability, risk = record["plots"]
    return f"""## Test-time augmentation, calibration and "uncertain"

`--tta flip` (the default) averages each face's probabilities with its mirror image's; `--tta
none` classifies the face alone (`benchmarks/tta_calibration.py`; faces/s classified on one
thread). The expected calibration error (ECE, 15 bins) is given as PublicTest / PrivateTest, as
the file ships (no temperature) and with the temperatures fitted on the validation part
({temperatures}):

| --tta | PublicTest | PrivateTest | faces/s | ECE as shipped | ECE with the temperature |
|---|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

The fitted temperatures raised the test splits' error, so the file ships without one. A
perfectly calibrated model would still show an ECE of {pct(floor["mean"])} on 3,589 faces
(5-95%: {pct(floor["p5"])}-{pct(floor["p95"])}), by sampling alone. Reliability diagram:
`{reliability}`.

`--min-confidence P` reports a face whose top probability is under P as `uncertain`. On
PublicTest with `--tta {public["tta"]}`: the share of faces labelled and the accuracy on them
(risk-coverage curve: `{risk}`).

| P | labelled | accuracy |
|---:|---:|---:|
{coverage}

80% accuracy is reached at P = {at80["min_confidence"]:.2f}, labelling {pct(at80["coverage"])}
of faces.
"""


def markdown(card: dict) -> str:
    """The model card as Markdown."""
    names = card["classes"]
    rows = "\n".join(
        f"| {n} | {100 * card['recall']['public_test'][n]:.1f} | "
        f"{100 * card['recall']['private_test'][n]:.1f} |"
        for n in names
    )
    t = card["training"]
    start = t["config"]["model"].get("init")
    teachers = teacher_files(t["config"])
    taught = (
        f" and was distilled from {'an ensemble of ' * (len(teachers) > 1)}"
        + ", ".join(f"`{file_name(teacher)}`" for teacher in teachers)
        if teachers
        else ""
    )
    other_splits = t.get("teachers_trained_on_other_splits", 0)
    optimistic = (
        f" (optimistic: {other_splits} of its teachers trained on other splits, which hold most of"
        " its validation faces)"
        if other_splits
        else ""
    )
    validation = (
        "none (its last part trained on the validation faces too)"
        if t["validation_accuracy"] is None
        else f"{100 * t['validation_accuracy']:.2f}%{optimistic}"
    )
    part = f" (its last part; it started from `{file_name(start)}`{taught})" if start else ""
    views_seconds, views = t.get("views_seconds"), ""
    if views_seconds:
        count = t["config"]["distill"]["views"]
        views = (
            f", after {views_seconds / 60:.0f} minutes making its teachers' logits on {count} views"
        )
    return f"""# Model card: {card["name"]}

The emotion model that ships inside ferlab (`ferlab/assets/{card["file"]}`, {card["bytes"] / 1e6:.1f} MB,
{card["parameters"]:,} weights). `ferlab predict` and `ferlab.EmotionRecognizer()` use it by
default; it runs with ONNX Runtime and needs neither PyTorch nor a download.

## What it does

Given a face, it gives the probability of each of seven expressions: {", ".join(names)}.

## Training

- Data: {t["data"]}.
- Command: `{t["command"]}`
- A VGG-style CNN (two 3x3 convolutions per block, widths {t["config"]["model"]["widths"]}),
  {t["epochs"]} epochs in {t["seconds"] / 60:.0f} minutes on one CPU thread{views}{part}.
- Validation accuracy: {validation}.

## Accuracy (on the shipped file, no test-time augmentation)

The shipped file is {card["quantization"]}; the float network it was made from is beside it.

| split | shipped (int8) | float |
|---|---:|---:|
| PublicTest (3,589 faces) | {pct(card["accuracy"]["public_test"])} | {pct(card["float_model_accuracy"]["public_test"])} |
| PrivateTest (3,589 faces) | {pct(card["accuracy"]["private_test"])} | {pct(card["float_model_accuracy"]["private_test"])} |

Neither test split was used for any choice. Recall per class (%):

| class | PublicTest | PrivateTest |
|---|---:|---:|
{rows}

## Input framing

- {card["input"]["pixels"]}, {card["input"]["shape"][0]}x{card["input"]["shape"][1]}.
- Framing: {card["input"]["framing"]}.
- Preprocessing {card["input"]["preprocessing"]}.

{real_photos(card)}
{calibration(card)}
## Limits

{card["limits"]}
## Check

The test suite re-measures every {card["check_sample"]["every"]}th PublicTest face in file-name
order ({card["check_sample"]["size"]} faces): {100 * card["check_sample"]["accuracy"]:.2f}%.
sha256 `{card["sha256"]}`.
"""


if __name__ == "__main__":
    main()
