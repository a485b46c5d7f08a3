"""Speed of emotion recognition on one thread: faces per second and whole photos per second.

Faces: batches of 256 real FER2013 PublicTest crops through the shipped (int8) ONNX model with
ONNX Runtime, beside the float network it was made from (``--cnn``, the ``.safetensors``) in ONNX
Runtime and in PyTorch, runs interleaved. Photos: real photos (scikit-image, scikit-learn) at
1280x720 and 640x480 with 1 to 3 real faces pasted at 96 to 200 pixels (scaled with the photo),
end to end per face detector (``--detectors``), rounds interleaved; detection and framing timed
apart from classification. Writes ``benchmarks/results/recognizer_speed.json``.

    python benchmarks/recognizer_speed.py --data ../shared/data/fer2013-images.tar.gz [--cnn model.safetensors]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from harness import RESULTS, side_by_side, this_cpu, write_record

RESULT = RESULTS / "recognizer_speed.json"
BATCH = 256


def classify_all(predict, faces) -> None:
    """``predict`` on ``faces`` (N, 48, 48) uint8 in batches of ``BATCH``."""
    for start in range(0, len(faces), BATCH):
        predict(faces[start : start + BATCH])


def faces_per_second(predict, faces, repeats) -> float:
    """Faces per second of ``predict`` over ``faces``: the median of ``repeats`` passes."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        classify_all(predict, faces)
        times.append(time.perf_counter() - started)
    return len(faces) / statistics.median(times)


def photo_scenes(public, count: int, size: tuple[int, int]) -> list[tuple[np.ndarray, int]]:
    """``count`` photos of ``size`` (W, H) with 1 to 3 PublicTest faces pasted on each, the
    faces 96 to 200 pixels at 1280 pixels wide (scaled with the width): (scene, face count)."""
    from ferlab.vision.scenes import background_photos, place_faces

    rng = np.random.default_rng(0)
    backgrounds = background_photos(size)
    scale = size[0] / 1280
    scenes = []
    for i in range(count):
        faces = int(rng.integers(1, 4))
        crops = public.images[rng.choice(len(public), faces, replace=False)]
        sides = [max(48, round(int(s) * scale)) for s in rng.integers(96, 201, faces)]
        scene, _ = place_faces(backgrounds[i % len(backgrounds)], crops, sides, rng)
        scenes.append((scene, faces))
    return scenes


def time_photos(recognizer, scenes) -> tuple[float, float, int]:
    """Seconds detecting and framing, seconds classifying, and faces found, over ``scenes``."""
    detect_s = classify_s = 0.0
    found = 0
    for scene, _ in scenes:
        started = time.perf_counter()
        boxes, inputs = recognizer.crops(scene)
        middle = time.perf_counter()
        if len(inputs):
            recognizer.model.predict_proba(inputs)
        detect_s += middle - started
        classify_s += time.perf_counter() - middle
        found += len(boxes)
    return detect_s, classify_s, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="FER2013 (e.g. fer2013-images.tar.gz)")
    parser.add_argument("--model", help="ONNX model (default: the shipped one)")
    parser.add_argument("--cnn", help="the same CNN as .safetensors, to time PyTorch beside it")
    parser.add_argument("--faces", type=int, default=2048)
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--detectors", nargs="+", default=["blazeface", "haar"])
    parser.add_argument("--sizes", nargs="+", default=["1280x720", "640x480"])
    parser.add_argument("--out", default=str(RESULT))
    args = parser.parse_args()

    import cv2

    from ferlab.data import load_fer2013
    from ferlab.vision.recognizer import EmotionRecognizer

    cv2.setNumThreads(1)
    public = load_fer2013(args.data).split("public_test")
    faces = public.images[: args.faces]
    recognizer = EmotionRecognizer(args.model, threads=1)
    runners = {"onnxruntime": recognizer.model.predict_proba}
    if args.cnn:
        import tempfile

        import torch

        from ferlab.deep import load_cnn
        from ferlab.deep.export import export_onnx
        from ferlab.inference.models import load_model

        torch.set_num_threads(1)
        cnn = load_cnn(args.cnn)
        float_onnx = Path(tempfile.mkdtemp()) / "float.onnx"
        export_onnx(cnn, float_onnx)
        runners["onnxruntime_float"] = load_model(float_onnx, threads=1).predict_proba
        runners["pytorch"] = cnn.predict_proba
    # interleaved rounds (the machine is shared and noisy): 3 x --repeats passes of each
    faces_timing = side_by_side(
        {name: (lambda p=predict: classify_all(p, faces)) for name, predict in runners.items()},
        3 * args.repeats,
        baseline="onnxruntime",
    )
    face_rates = {name: round(len(faces) / s, 1) for name, s in faces_timing.medians.items()}
    photos, photo_timings = {}, {}
    recognizers = {name: EmotionRecognizer(args.model, detector=name) for name in args.detectors}
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        scenes = photo_scenes(public, args.photos, (width, height))
        rounds: dict[str, list[tuple[float, float, int]]] = {name: [] for name in recognizers}

        def end_to_end(name: str, scenes=scenes, rounds=rounds):
            def run() -> float:
                rounds[name].append(time_photos(recognizers[name], scenes))
                return rounds[name][-1][0] + rounds[name][-1][1]

            return run

        timing = side_by_side(
            {name: end_to_end(name) for name in recognizers}, 2, warmup=0, self_timed=True
        )
        photo_timings[size] = timing.record()
        times = {
            name: (
                statistics.mean(r[0] for r in runs),
                statistics.mean(r[1] for r in runs),
                runs[-1][2],
            )
            for name, runs in rounds.items()
        }
        for name, (detect_s, classify_s, found) in times.items():
            photos[f"{name}_{size}"] = {
                "detector": f"{name} {recognizers[name].detector.version}",
                "photos": args.photos,
                "size": size,
                "faces_pasted": sum(count for _, count in scenes),
                "faces_detected": found,
                "photos_per_second": round(args.photos / (detect_s + classify_s), 2),
                "ms_detect_and_frame_per_photo": round(1000 * detect_s / args.photos, 2),
                "ms_classify_per_photo": round(1000 * classify_s / args.photos, 2),
            }
    record = {
        "threads": 1,
        "cpu": this_cpu(),
        "faces_per_second": face_rates,
        "onnx_over_pytorch": round(face_rates["onnxruntime"] / face_rates["pytorch"], 2)
        if "pytorch" in face_rates
        else None,
        "photo_pipeline": photos,
        "faces_side_by_side": faces_timing.record(),
        "photos_side_by_side": photo_timings,
    }
    print(json.dumps(record, indent=2))
    write_record(args.out, record)


if __name__ == "__main__":
    main()
