"""Whole-photo accuracy: real FER2013 faces placed, enlarged, on real background photos.

Each scene is a 640x480 photo from scikit-image or scikit-learn with 1 to 3 PrivateTest faces
pasted at random places and sizes (96 to 200 pixels), upright or (``--turn 30``) turned by up to
30 degrees either way. The recogniser detects, frames and classifies; its accuracy on the faces it
finds is set beside the same model's accuracy on the same faces' original (upright) 48x48 crops.
Also reports detection recall and false detections per 100 scenes. Every detector named in
``--detectors`` runs on the same scenes, side by side.

``--calibrate N`` measures each detector's framing instead, on N Training faces only: the ratio of
the pasted crop's side to the detector's box side and the centre's offset (the values behind each
detector's :class:`ferlab.vision.framing.Framing`). ``--scores N`` gives, on N Training faces
(half of them turned), the recall and false faces per 100 scenes at each score threshold
(BlazeFace's face score and its default ``min_score`` are fitted and chosen on other scenes, by
``detector_verifier.py``; never on the test parts).

    python benchmarks/pipeline_accuracy.py --data ../shared/data/fer2013-images.tar.gz
    python benchmarks/pipeline_accuracy.py --data ... --turn 30
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from harness import RESULTS, stamped, write_record

RESULT = RESULTS / "pipeline_accuracy.json"


def benchmark_sizes(rng, count: int) -> list[int]:
    """The pipeline benchmark's face sides: uniform whole pixels in [96, 200]."""
    return [int(s) for s in rng.integers(96, 201, count)]


def scenes(faces, rng, backgrounds, max_faces=3, turn=0.0, sizes=benchmark_sizes, tries=20):
    """Yield (scene, boxes, face indices) covering every face once, in order: 1 to
    ``max_faces`` faces per scene, of sides ``sizes(rng, count)``, turned by a uniform random
    angle in [-turn, turn] degrees; a draw that does not fit is drawn again, ``tries`` times."""
    from ferlab.vision.scenes import place_faces

    start = 0
    while start < len(faces):
        count = min(int(rng.integers(1, max_faces + 1)), len(faces) - start)
        background = backgrounds[int(rng.integers(len(backgrounds)))]
        for _ in range(tries):  # turned faces take more room: draw again when they do not fit
            sides = sizes(rng, count)
            angles = [float(a) for a in rng.uniform(-turn, turn, count)] if turn else None
            try:
                scene, boxes = place_faces(
                    background, faces[start : start + count], sides, rng, angles
                )
                break
            except ValueError:
                continue
        else:
            raise ValueError(f"cannot place {count} faces on a scene")
        yield scene, boxes, list(range(start, start + count))
        start += count


def match(detections, box):
    from ferlab.vision.scenes import overlap

    scored = [(overlap((d.x, d.y, d.w, d.h), box), i) for i, d in enumerate(detections)]
    best = max(scored, default=(0.0, -1))
    return best[1] if best[0] >= 0.3 else -1


def calibrate(recognizer, data, count, rng, backgrounds) -> dict:
    train = data.split("training")
    pick = rng.choice(len(train), count, replace=False)
    ratios, dx, dy, found = [], [], [], 0
    for scene, boxes, _ in scenes(train.images[pick], rng, backgrounds, max_faces=1):
        detections = recognizer.detector.detect(scene)
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


def score_thresholds(recognizer, data, count, rng, backgrounds, turn) -> dict:
    """Recall and false faces per 100 scenes at each score threshold, on Training faces."""
    train = data.split("training")
    pick = rng.choice(len(train), count, replace=False)
    true_scores, false_scores, n_scenes = [], [], 0
    half = count // 2
    for part, angle in ((pick[:half], 0.0), (pick[half:], turn)):
        for scene, boxes, _ in scenes(train.images[part], rng, backgrounds, turn=angle):
            n_scenes += 1
            detections = recognizer.detector.detect(scene)
            matched = {match(detections, box) for box in boxes}
            true_scores += [detections[j].score for j in matched if j >= 0]
            true_scores += [0.0] * sum(j < 0 for j in matched)
            false_scores += [d.score for j, d in enumerate(detections) if j not in matched]
    true_scores, false_scores = np.array(true_scores), np.array(false_scores)
    rows = []
    for threshold in (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9):
        hits, false = int((true_scores >= threshold).sum()), int((false_scores >= threshold).sum())
        rows.append(
            {
                "min_score": threshold,
                "recall": round(hits / count, 4),
                "precision": round(hits / max(1, hits + false), 4),
                "false_per_100_scenes": round(100 * false / n_scenes, 2),
            }
        )
    # The default threshold: the lowest whose precision on these Training faces is >= 95%.
    chosen = next((r["min_score"] for r in rows if r["precision"] >= 0.95), None)
    return {
        "faces": count,
        "turn_degrees": turn,
        "scenes": n_scenes,
        "thresholds": rows,
        "lowest_threshold_with_precision_95": chosen,
    }


def evaluate(recognizer, data, count, rng, backgrounds, turn=0.0) -> dict:
    test = data.split("private_test")
    pick = np.sort(rng.choice(len(test), min(count, len(test)), replace=False))
    faces, labels = test.images[pick], test.labels[pick]
    crop_pred = recognizer.model.predict(faces)
    pipe_pred = np.full(len(faces), -1)
    false_detections, detect_s, classify_s, n_scenes = 0, 0.0, 0.0, 0

    for scene, boxes, index in scenes(faces, rng, backgrounds, turn=turn):
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
        "turn_degrees": turn,
        "scenes": n_scenes,
        "detection_recall": round(float(found.mean()), 4),
        "false_detections": int(false_detections),
        "false_per_100_scenes": round(100 * false_detections / n_scenes, 2),
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
    parser.add_argument("--detectors", nargs="+", default=["blazeface", "haar"])
    parser.add_argument("--network", help="BlazeFace network (default: the shipped default)")
    parser.add_argument("--faces", type=int, default=3589, help="PrivateTest faces to place")
    parser.add_argument(
        "--turn", type=float, default=0.0, help="turn faces by up to this many degrees"
    )
    parser.add_argument(
        "--calibrate", type=int, default=0, metavar="N", help="measure framing on N Training faces"
    )
    parser.add_argument(
        "--scores", type=int, default=0, metavar="N", help="score thresholds on N Training faces"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULT), help="JSON record to write")
    args = parser.parse_args()

    import cv2

    from ferlab.assets import shipped_model_path
    from ferlab.data import load_fer2013
    from ferlab.vision.recognizer import EmotionRecognizer
    from ferlab.vision.scenes import BACKGROUNDS, background_photos

    cv2.setNumThreads(1)
    data = load_fer2013(args.data)
    backgrounds = background_photos()
    if args.calibrate:
        kind, option = "calibration", f" --calibrate {args.calibrate}"
    elif args.scores:
        kind, option = "scores", f" --scores {args.scores} --turn {args.turn:g}"
    else:
        kind, option = (
            "evaluation",
            f" --faces {args.faces}" + (f" --turn {args.turn:g}" if args.turn else ""),
        )
    previous = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    for name in args.detectors:
        # A low threshold for the score table, so that every threshold above it can be read off.
        detector = name
        if name == "blazeface" and (args.network or args.scores):
            from ferlab.vision.blazeface import NETWORK, BlazeFaceDetector

            # A low threshold for the score table, so that every threshold above it can be read.
            detector = BlazeFaceDetector(
                network=args.network or NETWORK, min_score=0.3 if args.scores else 0.5
            )
        recognizer = EmotionRecognizer(args.model, detector=detector, threads=1)
        rng = np.random.default_rng(args.seed)  # the same scenes for every detector
        record = {
            "command": "python benchmarks/pipeline_accuracy.py --data fer2013-images.tar.gz"
            + option
            + f" --detectors {name}",
            "detector": f"{recognizer.detector.name} {recognizer.detector.version}",
            "model": str(args.model or "shipped"),
            # which file was measured, so a record left from an earlier shipped model shows as such
            "model_sha256": hashlib.sha256(
                Path(args.model or shipped_model_path()).read_bytes()
            ).hexdigest(),
            "framing": {"scale": recognizer.framing.scale, "shift": recognizer.framing.shift},
            "backgrounds": list(BACKGROUNDS),
            "seed": args.seed,
        }
        if kind == "calibration":
            record[kind] = result = calibrate(recognizer, data, args.calibrate, rng, backgrounds)
            print(name, json.dumps(result, indent=2))
        elif kind == "scores":
            record[kind] = result = score_thresholds(
                recognizer, data, args.scores, rng, backgrounds, args.turn
            )
            print(name, json.dumps(result["thresholds"], indent=1))
        else:
            record[kind] = result = evaluate(
                recognizer, data, args.faces, rng, backgrounds, turn=args.turn
            )
            print(
                f"{name}: detection recall {result['detection_recall']:.1%} of {result['faces']} "
                f"faces turned up to {args.turn:g} degrees ({result['false_per_100_scenes']:.2f} "
                f"false faces per 100 scenes)\n"
                f"accuracy on found faces: pipeline {result['pipeline_accuracy_on_found']:.2%}, "
                f"same faces' original crops {result['crop_accuracy_on_same_faces']:.2%} "
                f"(gap {result['gap_points']:.2f} points); all crops {result['crop_accuracy_on_all']:.2%}"
            )
        suffix = "" if kind != "evaluation" or not args.turn else f"_turned{args.turn:g}"
        # each entry with its machine and time; its command names its one detector, the command
        # line that ran is its recorded_by
        previous[f"{kind}{suffix}_{name}"] = stamped(record)
    write_record(args.out, previous, stamp=False)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
