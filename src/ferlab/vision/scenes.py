"""Test scenes: real face crops placed, enlarged, on real background photos.

The backgrounds are photos that install with scikit-image and scikit-learn (nothing is
downloaded). Scenes measure the whole photo pipeline (detect, frame, classify) against the
same model on the original crops; see ``benchmarks/pipeline_accuracy.py``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

BACKGROUNDS = ("coffee", "chelsea", "rocket", "motorcycle", "china", "flower", "hubble")


def background_photos(size: tuple[int, int] = (640, 480)) -> list[np.ndarray]:
    """Real RGB photos without faces, resized to ``size`` (W, H): a list of (H, W, 3) arrays."""
    from skimage import data
    from sklearn.datasets import load_sample_image

    photos = [
        data.coffee(),
        data.chelsea(),
        data.rocket(),
        data.stereo_motorcycle()[0],
        load_sample_image("china.jpg"),
        load_sample_image("flower.jpg"),
        data.hubble_deep_field(),
    ]
    return [
        np.asarray(Image.fromarray(p).convert("RGB").resize(size, Image.Resampling.BILINEAR))
        for p in photos
    ]


def place_faces(
    background: np.ndarray, crops: np.ndarray, sizes: list[int], rng: np.random.Generator
) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Paste each grayscale crop (N, h, w), enlarged (bicubic) to ``sizes[i]`` pixels square, at a
    random place of an RGB background (H, W, 3) where it overlaps no other; return the scene and
    each crop's box (x, y, w, h). Raises ValueError when the faces cannot all fit."""
    scene = background.copy()
    height, width = scene.shape[:2]
    boxes: list[tuple[int, int, int, int]] = []
    for crop, side in zip(crops, sizes, strict=True):
        for _ in range(200):
            x = int(rng.integers(0, width - side + 1))
            y = int(rng.integers(0, height - side + 1))
            if all(
                x + side <= bx or bx + bw <= x or y + side <= by or by + bh <= y
                for bx, by, bw, bh in boxes
            ):
                break
        else:
            raise ValueError(f"cannot fit {len(sizes)} faces of sizes {sizes} on {width}x{height}")
        face = Image.fromarray(crop).resize((side, side), Image.Resampling.BICUBIC)
        scene[y : y + side, x : x + side] = np.asarray(face)[..., None]
        boxes.append((x, y, side, side))
    return scene, boxes


def overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter)
