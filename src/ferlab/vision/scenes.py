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
    background: np.ndarray,
    crops: np.ndarray,
    sizes: list[int],
    rng: np.random.Generator,
    angles: list[float] | None = None,
) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Paste each grayscale crop (N, h, w), enlarged (bicubic) to ``sizes[i]`` pixels square and
    turned by ``angles[i]`` degrees (counter-clockwise; the background shows in the corners), at a
    random place of an RGB background (H, W, 3) where it overlaps no other; return the scene and
    each face's upright square box (x, y, w, h). Raises ValueError when the faces cannot all fit."""
    scene = background.copy()
    height, width = scene.shape[:2]
    boxes: list[tuple[int, int, int, int]] = []
    taken: list[tuple[int, int, int, int]] = []  # the turned faces' whole squares
    angles = angles if angles is not None else [0.0] * len(sizes)
    for crop, side, angle in zip(crops, sizes, angles, strict=True):
        face = np.asarray(Image.fromarray(crop).resize((side, side), Image.Resampling.BICUBIC))
        mask = np.full((side, side), 255, np.uint8)
        if angle:
            face = np.asarray(Image.fromarray(face).rotate(angle, Image.Resampling.BICUBIC, True))
            mask = np.asarray(Image.fromarray(mask).rotate(angle, Image.Resampling.BILINEAR, True))
        extent = face.shape[0]
        for _ in range(200):
            x = int(rng.integers(0, width - extent + 1))
            y = int(rng.integers(0, height - extent + 1))
            if all(
                x + extent <= bx or bx + bw <= x or y + extent <= by or by + bh <= y
                for bx, by, bw, bh in taken
            ):
                break
        else:
            raise ValueError(f"cannot fit {len(sizes)} faces of sizes {sizes} on {width}x{height}")
        alpha = (mask.astype(np.float32) / 255.0)[..., None]
        region = scene[y : y + extent, x : x + extent].astype(np.float32)
        blended = face[..., None].astype(np.float32) * alpha + region * (1.0 - alpha)
        scene[y : y + extent, x : x + extent] = (blended + 0.5).astype(np.uint8)
        taken.append((x, y, extent, extent))
        inset = (extent - side) // 2
        boxes.append((x + inset, y + inset, side, side))
    return scene, boxes


def overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter)
