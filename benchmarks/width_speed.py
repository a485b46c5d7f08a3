"""What a wider shipped CNN would cost: int8 faces per second and training step time, by width.

For each set of block widths (two 3x3 convs per block, as the shipped network), a network with
seeded random weights is exported to ONNX and quantised exactly as a shipped model is
(calibrated on 512 FER2013 Training faces); its faces per second on one thread through ONNX
Runtime are timed on real PublicTest crops in interleaved rounds (the machine is shared and
noisy), beside the seconds of one SGD training step (batch 128, 40x40 crops, one thread). Speed
does not depend on the weights' values, so no training is needed to answer "would it fit the
1,000 faces/s budget?". Writes ``benchmarks/results/width_speed.json``.

    python benchmarks/width_speed.py --data ../shared/data/fer2013-images.tar.gz
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ferlab.data import load_fer2013
from ferlab.data.fer2013 import CLASS_NAMES
from ferlab.deep.classifier import CNNClassifier
from ferlab.deep.export import export_onnx
from ferlab.deep.model import architecture_from_config, build_cnn
from ferlab.deep.run import image_statistics
from ferlab.inference.models import load_model
from ferlab.inference.onnx_model import quantize_onnx
from harness import RESULTS, side_by_side, this_cpu, write_record
from recognizer_speed import classify_all

# The release's own draw of the int8 calibration faces (release/ship_model.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "release"))
from ship_model import calibration_faces  # noqa: E402

RESULT = RESULTS / "width_speed.json"
SHIPPED_WIDTHS = "32,64,128,256"
CROP = 40


def random_network(widths: list[int]) -> torch.nn.Module:
    """The shipped architecture at ``widths``, seeded random weights."""
    from ferlab.settings import CNNModelSettings

    model = CNNModelSettings(widths=widths, convs=[2] * len(widths), dropout=0.0, head_dropout=0.3)
    torch.manual_seed(0)
    return build_cnn(architecture_from_config(model, len(CLASS_NAMES)))


def int8_model(module, mean: float, std: float, calibration: np.ndarray, folder: Path):
    """``module`` exported to ONNX and quantised like the shipped file: (loaded model, bytes)."""
    classifier = CNNClassifier(module, CLASS_NAMES, mean, std, CROP)
    float_path, int8_path = folder / "float.onnx", folder / "int8.onnx"
    export_onnx(classifier, float_path)
    quantize_onnx(float_path, int8_path, calibration)
    return load_model(int8_path, threads=1), int8_path.stat().st_size


def step_seconds(module, steps: int) -> float:
    """Median seconds of one SGD step (batch 128 of 40x40, channels-last) in training mode."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(128, 1, CROP, CROP, generator=generator)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, len(CLASS_NAMES), (128,), generator=generator)
    module = module.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
    times = []
    for _ in range(steps + 2):  # the first two warm up
        started = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(module(x), y).backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return statistics.median(times[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="FER2013 (e.g. fer2013-images.tar.gz)")
    parser.add_argument(
        "--widths",
        nargs="+",
        default=[SHIPPED_WIDTHS, "40,80,160,320", "48,96,192,384", "64,128,256,512"],
        help="block widths, comma-separated, one set per network (the first is the baseline)",
    )
    parser.add_argument("--faces", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default=str(RESULT))
    args = parser.parse_args()

    torch.set_num_threads(1)
    data = load_fer2013(args.data)
    training = data.split("training")
    faces = data.split("public_test").images[: args.faces]
    calibration = calibration_faces(training)
    mean, std = image_statistics(training.images)

    networks = {}
    with tempfile.TemporaryDirectory() as folder:
        for text in args.widths:
            widths = [int(w) for w in text.split(",")]
            module = random_network(widths)
            subfolder = Path(folder) / text.replace(",", "-")
            subfolder.mkdir()
            model, size = int8_model(module, mean, std, calibration, subfolder)
            networks[text] = {
                "widths": widths,
                "parameters": sum(p.numel() for p in module.parameters()),
                "int8_bytes": size,
                "model": model,
                "module": module,
            }
            print(f"widths {text}: {networks[text]['parameters']:,} parameters, {size:,} bytes")
        # side by side, the first widths the baseline: 3 x --repeats passes over the faces,
        # then 3 rounds of training steps
        rates = side_by_side(
            {text: lambda n=network: classify_all(n["model"].predict_proba, faces)
             for text, network in networks.items()},
            3 * args.repeats,
        )  # fmt: skip
        steps = side_by_side(
            {text: lambda n=network: step_seconds(n["module"], args.steps)
             for text, network in networks.items()},
            3,
            warmup=0,  # step_seconds warms up itself
            self_timed=True,
        )  # fmt: skip

    baseline = args.widths[0]
    results = []
    for text, network in networks.items():
        rate, step = len(faces) / rates.medians[text], steps.medians[text]
        results.append({
            "widths": network["widths"],
            "parameters": network["parameters"],
            "int8_bytes": network["int8_bytes"],
            "int8_faces_per_second": round(rate, 1),
            "speed_ratio_to_baseline": round(1 / rates.ratios[text], 3),
            "train_step_seconds": round(step, 4),
            "train_step_ratio_to_baseline": round(steps.ratios[text], 3),
        })  # fmt: skip
        print(
            f"widths {text}: {rate:,.0f} faces/s int8 ({1 / rates.ratios[text]:.2f}x the "
            f"baseline), training step {step:.3f} s ({steps.ratios[text]:.2f}x)"
        )
    record = {
        "threads": 1,
        "cpu": this_cpu(),
        "baseline_widths": baseline,
        "faces": len(faces),
        "networks": results,
        "faces_side_by_side": rates.record(),
        "train_steps_side_by_side": steps.record(),
    }
    write_record(args.out, record)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
