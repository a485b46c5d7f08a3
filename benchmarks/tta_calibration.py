"""Calibration and test-time augmentation of the shipped model: fit, choose, store, measure.

The shipped network refit on all of FER2013 Training (``data.refit``): it trained on the
validation part (split seed 0, 2,871 faces) in its last 16 epochs, so no Training face is held
out from it. The closest honest held-out set the records allow is that validation part as seen
by a network of the same config that held it out: ``--sibling`` (default
``fer2013_cnn_cpu_split0_view_part3_seed0``: configs/fer2013_cnn_cpu_view_part3.toml, seed 0,
split seed 0, no refit; cnn_cpu_split0_view_part3.json), with the three 100-epoch networks that
also held it out (the shipped network's teachers) for the flip choice. Every choice is made there:

- the temperature of each TTA choice (NLL on the sibling's validation part);
- flip or none as the default (validation accuracy of the networks that held it out, and the
  1,000 faces/s budget on one thread).

The shipped file's own validation figures are recorded beside them, marked as trained on.
PublicTest and PrivateTest are measured after, on the shipped int8 file with and without its
stored temperature: accuracy, NLL, ECE (15 bins), a reliability diagram and the accuracy and
coverage at a few ``--min-confidence`` thresholds (a risk-coverage curve). Faces/s per TTA
choice on one thread, interleaved, on the same PublicTest faces as recognizer_speed.py.

    python benchmarks/tta_calibration.py --data ../shared/data/fer2013-images.tar.gz [--write]

``--write`` stores the fitted temperatures in src/ferlab/assets/fer2013_cnn.onnx (the graph
is left as it is: int8). Writes benchmarks/results/tta_calibration.json and two PNGs beside it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from harness import RESULTS, ROOT, side_by_side, write_record

MODELS = RESULTS / "models"
RESULT = RESULTS / "tta_calibration.json"
PLOT_ENDS = ("reliability.png", "risk_coverage.png")  # beside the record: RECORD_<end>
SHIPPED = ROOT / "src" / "ferlab" / "assets" / "fer2013_cnn.onnx"
SIBLING = "fer2013_cnn_cpu_split0_view_part3_seed0"
HELD_OUT_TOO = [f"fer2013_cnn_cpu_split0_long_seed{n}" for n in range(3)]
THRESHOLDS = [0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
SPEED_BUDGET = 1000.0  # faces/s on one thread
TESTS = {"public_test": "PublicTest", "private_test": "PrivateTest"}


def views_of(model, images: np.ndarray) -> dict[str, list[np.ndarray]]:
    """Uncalibrated probabilities of each TTA choice's views: {"none": [p], "flip": [p, p']}."""
    from ferlab.evaluation.calibration import flip_views

    plain, mirror = (np.asarray(model.predict_proba(v)) for v in flip_views(images, "flip"))
    return {"none": [plain], "flip": [plain, mirror]}


def figures(views: list[np.ndarray], labels: np.ndarray, temperature: float) -> dict:
    """Accuracy, NLL and ECE of the views averaged after ``temperature``."""
    from ferlab.evaluation.calibration import (
        average_views,
        expected_calibration_error,
        negative_log_likelihood,
    )

    probs = average_views(views, temperature)
    return {
        "accuracy": round(float((probs.argmax(axis=1) == labels).mean()), 4),
        "nll": round(negative_log_likelihood(probs, labels), 4),
        "ece": round(expected_calibration_error(probs, labels), 4),
    }


def ece_noise_floor(probs: np.ndarray, repeats: int = 50) -> dict:
    """The ECE a perfectly calibrated model would show on as many faces: labels drawn from the
    probabilities themselves (seeded), the mean and the 5th-95th percentiles over draws."""
    from ferlab.evaluation.calibration import expected_calibration_error

    rng = np.random.default_rng(0)
    cumulative = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    draws = []
    for _ in range(repeats):
        labels = (rng.random((len(probs), 1)) > cumulative).sum(axis=1)
        draws.append(expected_calibration_error(probs, np.minimum(labels, probs.shape[1] - 1)))
    return {
        "mean": round(float(np.mean(draws)), 4),
        "p5": round(float(np.percentile(draws, 5)), 4),
        "p95": round(float(np.percentile(draws, 95)), 4),
    }


def speed(path: Path, faces: np.ndarray, repeats: int) -> tuple[dict[str, float], dict]:
    """Faces/s per TTA choice of the ONNX file at ``path``, one thread, side by side (3 x
    ``repeats`` interleaved rounds), and the timing's record part."""
    from ferlab.evaluation.calibration import TTA_VIEWS
    from ferlab.inference.models import load_model
    from recognizer_speed import classify_all

    models = {}
    for mode in TTA_VIEWS:
        models[mode] = load_model(path, threads=1)
        models[mode].tta = mode
    timing = side_by_side(
        {
            mode: (lambda m=model: classify_all(m.predict_proba, faces))
            for mode, model in models.items()
        },
        3 * repeats,
        baseline="none",
    )
    rates = {mode: round(len(faces) / seconds, 1) for mode, seconds in timing.medians.items()}
    return rates, timing.record()


def shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def plot_reliability(tests: dict, path: Path) -> None:
    """Reliability diagrams: accuracy per confidence bin before and after calibration, per split."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.6), constrained_layout=True)
    for ax, (split, record) in zip(fig.subplots(1, 2), tests.items(), strict=True):
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="calibrated")
        for key, colour in (("uncalibrated", "tab:red"), ("calibrated", "tab:blue")):
            bins = [b for b in record["reliability"][key] if b["count"]]
            ece = record[key]["ece"]
            ax.plot(
                [b["confidence"] for b in bins],
                [b["accuracy"] for b in bins],
                marker="o",
                color=colour,
                label=f"{key} (ECE {100 * ece:.2f}%)",
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("mean top probability in the bin (15 bins)")
        ax.set_ylabel("accuracy in the bin")
        ax.set_title(f"{TESTS[split]}, tta {record['tta']}")
        ax.legend(loc="upper left")
    fig.suptitle("fer2013_cnn (int8): reliability before and after temperature scaling")
    fig.savefig(path, dpi=100)


def plot_coverage(tests: dict, path: Path) -> None:
    """Accuracy against coverage as --min-confidence rises, per test split."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.6), constrained_layout=True)
    ax = fig.subplots()
    for split, record in tests.items():
        curve = record["risk_coverage_curve"]
        ax.plot([c["coverage"] for c in curve], [c["accuracy"] for c in curve], label=TESTS[split])
        for row in record["risk_coverage"]:
            if row["accuracy"] is not None and row["min_confidence"] in (0.5, 0.7, 0.9):
                ax.annotate(
                    f"{row['min_confidence']:g}",
                    (row["coverage"], row["accuracy"]),
                    textcoords="offset points",
                    xytext=(4, -10),
                    fontsize=8,
                )
    ax.axhline(0.8, color="grey", lw=1, ls="--")
    ax.set_xlabel("coverage (share of faces given an emotion)")
    ax.set_ylabel("accuracy on those faces")
    ax.set_title("fer2013_cnn (calibrated, tta flip): --min-confidence")
    ax.legend()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="FER2013 (e.g. fer2013-images.tar.gz)")
    parser.add_argument("--sibling", default=SIBLING, help="the held-out network, in models/")
    parser.add_argument("--faces", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="store the temperatures in the file")
    parser.add_argument("--out", type=Path, default=RESULT, help="JSON record (PNGs beside it)")
    args = parser.parse_args()

    import torch

    from ferlab.data import load_fer2013
    from ferlab.data.split import held_out_part, split_images
    from ferlab.evaluation.calibration import (
        TTA_VIEWS,
        average_views,
        coverage_at_accuracy,
        fit_temperature,
        reliability_bins,
        risk_coverage,
    )
    from ferlab.inference.models import load_model
    from ferlab.inference.onnx_model import set_temperature

    torch.set_num_threads(1)
    data = load_fer2013(args.data)
    shipped = load_model(SHIPPED)
    shipped.temperature = dict.fromkeys(TTA_VIEWS, 1.0)  # its raw probabilities, even if stored
    sibling_path = MODELS / f"{args.sibling}.safetensors"
    sibling = load_model(sibling_path)
    part = held_out_part(sibling.training_info)
    if part.get("refit") or held_out_part(shipped.training_info) != dict(part, refit=True):
        raise SystemExit(f"{args.sibling} did not hold out the shipped network's validation part")
    val = split_images(data, sibling.training_info["data"] | {"dataset": "fer2013"}, 0).val

    # Choices, on validation faces only.
    sibling_views = views_of(sibling, val.images)
    temperature = {
        mode: round(fit_temperature(sibling_views[mode], val.labels), 4) for mode in TTA_VIEWS
    }
    validation: dict[str, dict] = {}
    for name in [args.sibling, *HELD_OUT_TOO]:
        model = sibling if name == args.sibling else load_model(MODELS / f"{name}.safetensors")
        views = sibling_views if name == args.sibling else views_of(model, val.images)
        validation[name] = {mode: figures(views[mode], val.labels, 1.0) for mode in TTA_VIEWS}
        validation[name]["temperature_fitted_here"] = {
            mode: round(fit_temperature(views[mode], val.labels), 4) for mode in TTA_VIEWS
        }
    shipped_val = views_of(shipped, val.images)
    validation["shipped (trained on these faces: data.refit)"] = {
        mode: figures(shipped_val[mode], val.labels, 1.0) for mode in TTA_VIEWS
    } | {
        "temperature_fitted_here": {
            mode: round(fit_temperature(shipped_val[mode], val.labels), 4) for mode in TTA_VIEWS
        },
    }
    gains = [r["flip"]["accuracy"] - r["none"]["accuracy"] for k, r in validation.items()
             if not k.startswith("shipped")]  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        calibrated = set_temperature(SHIPPED, Path(folder) / "calibrated.onnx", temperature)
        faces = data.split("public_test").images[: args.faces]
        faces_per_second, speed_timing = speed(calibrated, faces, args.repeats)
        if args.write:
            set_temperature(SHIPPED, SHIPPED, temperature)
    default = "flip" if min(gains) > 0 and faces_per_second["flip"] >= SPEED_BUDGET else "none"

    # Measured after, on the test splits (never used to choose).
    tests, by_mode = {}, {}
    for split in TESTS:
        test = data.split(split)
        views = views_of(shipped, test.images)
        by_mode[split] = {
            mode: {
                "uncalibrated": figures(views[mode], test.labels, 1.0),
                "calibrated": figures(views[mode], test.labels, temperature[mode]),
            }
            for mode in TTA_VIEWS
        }
        before = average_views(views[default], 1.0)
        after = average_views(views[default], temperature[default])
        tests[split] = {
            "tta": default,
            **by_mode[split][default],
            "ece_noise_floor": ece_noise_floor(after),
            "reliability": {
                "uncalibrated": reliability_bins(before, test.labels),
                "calibrated": reliability_bins(after, test.labels),
            },
            "risk_coverage": [
                {k: v if v is None else round(v, 4) for k, v in row.items()}
                for row in risk_coverage(after, test.labels, THRESHOLDS)
            ],
            "risk_coverage_curve": risk_coverage(after, test.labels, np.linspace(0, 0.99, 100)),
            "coverage_at_80": {
                k: v if v is None else round(v, 4)
                for k, v in coverage_at_accuracy(after, test.labels, 0.8).items()
            },
        }
    plots = [args.out.with_name(f"{args.out.stem}_{end}") for end in PLOT_ENDS]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot_reliability(tests, plots[0])
    plot_coverage(tests, plots[1])
    for record in tests.values():
        del record["risk_coverage_curve"]
    record = {
        "held_out": {
            "faces": len(val),
            "part": held_out_part(sibling.training_info),
            "model": f"benchmarks/results/models/{args.sibling}.safetensors",
            "why": "the shipped network refit on all of Training (its validation part included); "
            "the temperatures are fitted on that validation part as seen by a network of the "
            "same config that held it out, and carried over to the shipped file",
        },
        "temperature": temperature,
        "validation": validation,
        "flip_gain_on_validation": [round(g, 4) for g in gains],
        "faces_per_second": faces_per_second,
        "speed_side_by_side": speed_timing,
        "threads": 1,
        "speed_budget": SPEED_BUDGET,
        "default_tta": default,
        "tests": tests,
        "tests_by_tta": by_mode,
        "plots": [shown(p) for p in plots],
    }
    write_record(args.out, record)
    summary = {k: record[k] for k in ("temperature", "faces_per_second", "default_tta")}
    print(json.dumps(summary | {"tests_by_tta": by_mode}, indent=2))


if __name__ == "__main__":
    main()
