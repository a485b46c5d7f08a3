"""Whole-photo accuracy: real FER2013 faces placed, enlarged, on real background photos.

Each scene is a 640x480 photo from scikit-image or scikit-learn with 1 to 3 PrivateTest faces
pasted at random places and sizes (96 to 200 pixels). The recogniser detects, frames and
classifies; its accuracy on the faces it finds is set beside the same model's accuracy on the same
faces' original 48x48 crops. Also reports detection recall and false detections.

``--calibrate`` measures the framing instead, on Training faces only: the ratio of the pasted
crop's side to the detector's box side (the value behind ``ferlab.vision.framing.FRAME_SCALE``).

    python benchmarks/pipeline_accuracy.py --data ../shared/data/fer2013-images.tar.gz
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time
from pathlib import Path

import numpy as np

RESULT = Path(__file__).parent / "results" / "pipeline_accuracy.json"


def scenes(faces, rng, backgrounds, max_faces=3):
    """Yield (scene, boxes, face indices) covering every face once, in order."""
    start = 0
    while start < len(faces):
        count = min(int(rng.integers(1, max_faces + 1)), len(faces) - start)
        sizes = [int(s) for s in rng.integers(96, 201, count)]
        background = backgrounds[int(rng.integers(len(backgrounds)))]
        from ferlab.vision.scenes import place_faces

        scene, boxes = place_faces(background, faces[start : start + count], sizes, rng)
        yield scene, boxes, list(range(start, start + count))
        start += count


def match(detections, box):
    from ferlab.vision.scenes import overlap

    scored = [(overlap((d.x, d.y, d.w, d.h), box), i) for i, d in enumerate(detections)]
    best = max(scored, default=(0.0, -1))
    return best[1] if best[0] >= 0.3 else -1


def calibrate(recognizer, data, count, rng, backgrounds) -> dict:
    from ferlab.vision.recognizer import to_gray

    train = data.split("training")
    pick = rng.choice(len(train), count, replace=False)
    ratios, dx, dy, found = [], [], [], 0
    for scene, boxes, _ in scenes(train.images[pick], rng, backgrounds, max_faces=1):
        detections = recognizer.detector.detect(to_gray(scene))
        j = match(detections, boxes[0])
        if j < 0:
            continue
        found += 1
        d, (x, y, side, _) = detections[j], boxes[0]
        ratios.append(side / d.w)
        dx.append((x + side / 2 - (d.x + d.w / 2)) / d.w)
        dy.append((y + side / 2 - (d.y + d.h / 2)) / d.w)
    q = lambda v: [round(float(np.percentile(v, p)), 4) for p in (25, 50, 75)]  # noqa: E731
    return {
        "faces": count,
        "detected": found,
        "side_over_box_quartiles": q(ratios),
        "centre_dx_over_box_quartiles": q(dx),
        "centre_dy_over_box_quartiles": q(dy),
    }


def evaluate(recognizer, data, count, rng, backgrounds) -> dict:
    test = data.split("private_test")
    pick = np.sort(rng.choice(len(test), min(count, len(test)), replace=False))
    faces, labels = test.images[pick], test.labels[pick]
    crop_pred = recognizer.model.predict(faces)
    pipe_pred = np.full(len(faces), -1)
    false_detections, detect_s, classify_s, n_scenes = 0, 0.0, 0.0, 0

    for scene, boxes, index in scenes(faces, rng, backgrounds):
        n_scenes += 1
        started = time.perf_counter()
        detections, inputs = recognizer.crops(scene)
        detect_s += time.perf_counter() - started
        started = time.perf_counter()
        predicted = recognizer.model.predict(inputs) if len(inputs) else []
        classify_s += time.perf_counter() - started
        matched = set()
        for box, i in zip(boxes, index, strict=True):
            j = match(detections, box)
            if j >= 0:
                pipe_pred[i] = predicted[j]
                matched.add(j)
        false_detections += len(detections) - len(matched)
    found = pipe_pred >= 0
    pipeline = float((pipe_pred[found] == labels[found]).mean())
    crops_found = float((crop_pred[found] == labels[found]).mean())
    return {
        "faces": int(len(faces)),
        "scenes": n_scenes,
        "detection_recall": round(float(found.mean()), 4),
        "false_detections": int(false_detections),
        "pipeline_accuracy_on_found": round(pipeline, 4),
        "crop_accuracy_on_same_faces": round(crops_found, 4),
        "crop_accuracy_on_all": round(float((crop_pred == labels).mean()), 4),
        "gap_points": round(100 * (crops_found - pipeline), 2),
        "agreement_pipeline_vs_crop": round(
            float((pipe_pred[found] == crop_pred[found]).mean()), 4
        ),
        "seconds_detect_and_frame": round(detect_s, 2),
        "seconds_classify": round(classify_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="FER2013 (e.g. fer2013-images.tar.gz)")
    parser.add_argument("--model", help="model file (default: the shipped model)")
    parser.add_argument("--faces", type=int, default=3589, help="PrivateTest faces to place")
    parser.add_argument(
        "--calibrate", type=int, default=0, metavar="N", help="measure framing on N Training faces"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULT), help="JSON record to write")
    args = parser.parse_args()

    import cv2

    from ferlab.assets import shipped_model_path
    from ferlab.data import load_fer2013
    from ferlab.vision.framing import FRAME_SCALE
    from ferlab.vision.recognizer import EmotionRecognizer
    from ferlab.vision.scenes import BACKGROUNDS, background_photos

    cv2.setNumThreads(1)
    data = load_fer2013(args.data)
    recognizer = EmotionRecognizer(args.model, threads=1)
    backgrounds = background_photos()
    rng = np.random.default_rng(args.seed)
    record = {
        "command": "python benchmarks/pipeline_accuracy.py --data fer2013-images.tar.gz"
        + (f" --calibrate {args.calibrate}" if args.calibrate else f" --faces {args.faces}"),
        "model": str(args.model or "shipped"),
        # which file was measured, so a record left from an earlier shipped model shows as such
        "model_sha256": hashlib.sha256(
            Path(args.model or shipped_model_path()).read_bytes()
        ).hexdigest(),
        "frame_scale": FRAME_SCALE,
        "backgrounds": list(BACKGROUNDS),
        "seed": args.seed,
        "machine": platform.platform(),
    }
    if args.calibrate:
        record["calibration"] = calibrate(recognizer, data, args.calibrate, rng, backgrounds)
        print(json.dumps(record["calibration"], indent=2))
    else:
        record["evaluation"] = result = evaluate(recognizer, data, args.faces, rng, backgrounds)
        print(
            f"detection recall {result['detection_recall']:.1%} of {result['faces']} faces "
            f"({result['false_detections']} false detections in {result['scenes']} scenes)\n"
            f"accuracy on found faces: pipeline {result['pipeline_accuracy_on_found']:.2%}, "
            f"same faces' original crops {result['crop_accuracy_on_same_faces']:.2%} "
            f"(gap {result['gap_points']:.2f} points); all crops {result['crop_accuracy_on_all']:.2%}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    key = "calibration" if args.calibrate else "evaluation"
    previous[key] = record
    Path(args.out).write_text(json.dumps(previous, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
