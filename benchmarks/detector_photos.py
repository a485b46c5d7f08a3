"""Face detectors on real photos whose faces were counted and boxed by eye.

The photos come with registry packages (``benchmarks/photo_faces.json``, loaded by
``benchmarks/real_photos.py``; Debian's ``opencv-doc`` holds most of them). Every detector runs
on the same photos, side by side: recall of the counted faces (a detection matches a face when
their boxes overlap by IoU >= 0.3), false detections (matching no face and no ignored region),
and false detections on the photos without a human face (paintings, animals, drawn faces).

    python benchmarks/detector_photos.py [--detectors blazeface haar blazeface:20] [--out FILE]

A detector named ``NAME:PIXELS`` runs with ``min_face=PIXELS`` (``blazeface:20``: finer tiles).
Then the detectors' time over all the photos, side by side (``--repeats`` interleaved rounds,
ratios to the first detector; 0 skips it).
"""

from __future__ import annotations

import argparse
import time

from harness import RESULTS, side_by_side, write_record
from real_photos import photo_set

RESULT = RESULTS / "detector_photos.json"


def iou(a, b) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter)


def score_photo(detections, photo) -> dict:
    """Found faces, missed face indices and false detections of one photo."""
    boxes = [(d.x, d.y, d.w, d.h) for d in detections]
    used, found = set(), []
    for i, face in enumerate(photo.boxes):
        best = max(
            ((iou(face, b), j) for j, b in enumerate(boxes) if j not in used), default=(0, -1)
        )
        if best[0] >= 0.3:
            used.add(best[1])
            found.append(i)
    false = [
        j
        for j, b in enumerate(boxes)
        if j not in used and not any(iou(b, region) >= 0.3 for region in photo.ignore)
    ]
    return {"found": found, "false": false}


def run(detector, photos) -> dict:
    faces = found = false = false_no_face = 0
    seconds, per_photo = 0.0, []
    for photo in photos:
        started = time.perf_counter()
        detections = detector.detect(photo.image)
        seconds += time.perf_counter() - started
        result = score_photo(detections, photo)
        faces += len(photo.boxes)
        found += len(result["found"])
        false += len(result["false"])
        false_no_face += 0 if photo.has_faces else len(result["false"])
        per_photo.append(
            {
                "photo": photo.name,
                "faces": len(photo.boxes),
                "found": len(result["found"]),
                "false": len(result["false"]),
            }
        )
    with_faces = [p for p in photos if p.has_faces]
    return {
        "photos": len(photos),
        "photos_with_faces": len(with_faces),
        "faces": faces,
        "found": found,
        "recall": round(found / max(faces, 1), 4),
        "false_detections": false,
        "false_on_photos_without_faces": false_no_face,
        "photos_without_faces_with_a_false_face": sum(
            1 for p, r in zip(photos, per_photo, strict=True) if not p.has_faces and r["false"]
        ),
        "seconds": round(seconds, 2),
        "per_photo": per_photo,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", nargs="+", default=["blazeface", "haar", "blazeface:20"])
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the side-by-side timing")
    parser.add_argument("--out", default=str(RESULT))
    args = parser.parse_args()

    import cv2

    from ferlab.vision.detect import make_detector

    cv2.setNumThreads(1)
    photos = photo_set(require_all=True)
    record = {"detectors": {}}
    detectors = {}
    for name in args.detectors:
        kind, _, min_face = name.partition(":")
        detectors[name] = detector = make_detector(
            kind, min_face=int(min_face) if min_face else None
        )
        result = run(detector, photos)
        result["detector"] = f"{detector.name} {detector.version}"
        result["min_face"] = getattr(detector, "min_face", None)
        record["detectors"][name] = result
        print(
            f"{name}: {result['found']} of {result['faces']} faces ({result['recall']:.1%}) in "
            f"{result['photos_with_faces']} photos; {result['false_detections']} false detections, "
            f"{result['false_on_photos_without_faces']} of them on the "
            f"{result['photos'] - result['photos_with_faces']} photos without a face"
        )
    if args.repeats:
        timing = side_by_side(
            {
                name: (lambda d=d: [d.detect(p.image) for p in photos])
                for name, d in detectors.items()
            },
            args.repeats,
            warmup=0,  # the scoring pass above was each detector's warm-up
        )
        record["side_by_side"] = timing.record()
        print("\n".join(timing.lines()))
    write_record(args.out, record)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
