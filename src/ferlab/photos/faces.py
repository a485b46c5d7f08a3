"""The model inputs of a photo set: each photo through ``ferlab predict``'s detection, alignment
and framing (:class:`ferlab.vision.recognizer.EmotionRecognizer`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from ferlab.errors import DataError
from ferlab.photos.sets import PhotoSet
from ferlab.vision.detection import Detection
from ferlab.vision.framing import face_crop
from ferlab.vision.photo import read_photo
from ferlab.vision.recognizer import to_gray
from ferlab.vision.scenes import overlap

MIN_OVERLAP = 0.3  # a CSV box and a detection are the same face above this intersection/union


@dataclass
class PhotoFaces:
    """The faces found in a photo set: ``crops`` (N, H, W) uint8 model inputs, ``rows`` (N,)
    the photo-set row each came from, and the rows of photos where none was found with why."""

    crops: np.ndarray
    rows: np.ndarray
    boxes: list[Detection]
    missing: list[tuple[int, str]]

    def __len__(self) -> int:
        return len(self.rows)


def matching_detection(box: tuple[int, int, int, int], found: list[Detection]) -> Detection | None:
    """The detection that best overlaps a given (x, y, w, h) box, if any overlaps enough."""
    scored = [(overlap(box, (d.x, d.y, d.w, d.h)), d) for d in found]
    scored = [item for item in scored if item[0] >= MIN_OVERLAP]
    return max(scored, key=lambda item: item[0])[1] if scored else None


def find_faces(recognizer, photos: PhotoSet, *, verbose: bool = True) -> PhotoFaces:
    """Cut every labelled face of ``photos`` out as the recognizer's model input.

    A row without a box takes the photo's largest detected face; a row with a box takes the
    detection that overlaps it best (so it is aligned and framed as ``predict`` frames it), or,
    with the ``none`` detector, the box itself. Photos that cannot be read or hold no face are
    listed in ``missing``; when no photo at all gives a face, a one-line :class:`DataError`.
    """
    from tqdm.auto import tqdm

    from ferlab.common.progress import show_bars

    crops, rows, boxes, missing = [], [], [], []
    cache: dict = {}
    bar = tqdm(
        range(len(photos)), desc="photos", unit="photo", disable=not show_bars(verbose),
        file=sys.stderr,
    )  # fmt: skip
    for row in bar:
        path, box = photos.paths[row], photos.boxes[row]
        try:
            if path not in cache:  # a photo with several CSV rows is read and searched once
                rgb = read_photo(path, max_pixels=recognizer.max_pixels)
                cache = {path: (rgb, *recognizer.crops(rgb))}
            rgb, found, inputs = cache[path]
        except DataError as exc:
            missing.append((row, f"unreadable: {exc}"))
            continue
        if box is not None and recognizer.detector.name == "none":
            detection = Detection(*box, 1.0)
            crop = face_crop(to_gray(rgb), detection, size=recognizer.input_shape[0], scale=1.0)
        elif box is not None:
            detection = matching_detection(box, found)
            if detection is None:
                missing.append((row, f"no face found in the box {box}"))
                continue
            crop = inputs[found.index(detection)]
        elif found:
            detection = max(found, key=lambda d: d.w * d.h)
            crop = inputs[found.index(detection)]
        else:
            missing.append((row, "no face found"))
            continue
        crops.append(crop)
        rows.append(row)
        boxes.append(detection)
    if not crops:
        raise DataError(
            f"{photos.source}: no face found in any of the {len(photos)} photos "
            f"(detector {recognizer.detector.name}; try --detector haar, or --detector none for "
            "photos that are face crops already)"
        )
    if verbose and missing:
        print(f"no face in {len(missing)} of {len(photos)} photos", file=sys.stderr)
    shape = (0, *recognizer.input_shape)
    return PhotoFaces(
        np.stack(crops) if crops else np.zeros(shape, np.uint8),
        np.asarray(rows, dtype=np.int64),
        boxes,
        missing,
    )
