"""Cutting a face out of a photo the way FER2013's faces are framed.

FER2013 crops are square, grayscale, 48x48 and hold the face from just above the eyebrows to just
below the chin, upright. A detector's box is turned into such a crop by its :class:`Framing`: the
crop is a square ``scale`` times the box's longer side, centred ``shift`` box sides away from the
box's centre, turned by the head's tilt (from the eyes, when the detector gives them) so that the
eyes are level. Each detector's framing is measured on FER2013 Training faces
(``benchmarks/pipeline_accuracy.py --calibrate``), never on the test parts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ferlab.vision.detection import Detection

FRAME_SCALE = 1.03  # Haar's framing: its box on a FER2013 crop is nearly the crop itself


@dataclass(frozen=True)
class Framing:
    """A detector's box -> FER2013 crop: ``scale`` x the box's longer side, centred ``shift``
    (dx, dy) box sides from the box's centre, in the face's own (upright) frame."""

    scale: float = FRAME_SCALE
    shift: tuple[float, float] = (0.0, 0.0)


def face_crop(
    gray: np.ndarray,
    box: Detection,
    *,
    size: int = 48,
    scale: float = FRAME_SCALE,
    shift: tuple[float, float] = (0.0, 0.0),
    angle: float = 0.0,
) -> np.ndarray:
    """A uint8 (size, size) crop of the grayscale image (H, W) around ``box``.

    The crop is a square of side ``scale * max(w, h)`` centred ``shift`` box sides from the box's
    centre and turned by ``angle`` degrees (the head's roll, :attr:`Detection.roll`) so that a
    tilted face comes out upright; parts outside the image repeat its edge pixels.
    """
    import cv2

    longer = max(box.w, box.h)
    side = max(1.0, scale * longer)
    turn = math.radians(angle)
    dx, dy = shift[0] * longer, shift[1] * longer
    cx = box.x + box.w / 2.0 + dx * math.cos(turn) - dy * math.sin(turn)
    cy = box.y + box.h / 2.0 + dx * math.sin(turn) + dy * math.cos(turn)
    if abs(angle) < 0.5:
        return _upright_crop(gray, cx, cy, side, size)
    # The square turned by any angle lies within this region around its centre.
    half = side * 0.75
    x0, y0 = int(math.floor(cx - half)), int(math.floor(cy - half))
    region = _padded(gray, x0, y0, int(math.ceil(2 * half)) + 1)
    zoom = size / side
    if zoom < 1.0:  # shrink with area averaging first, so the turned crop does not alias
        shrunk = max(1, round(region.shape[0] * zoom))
        zoom_done = shrunk / region.shape[0]
        region = cv2.resize(region, (shrunk, shrunk), interpolation=cv2.INTER_AREA)
    else:
        zoom_done = 1.0
    centre = ((cx - x0) * zoom_done, (cy - y0) * zoom_done)
    matrix = cv2.getRotationMatrix2D(centre, angle, zoom / zoom_done)
    matrix[:, 2] += (size / 2.0 - centre[0], size / 2.0 - centre[1])
    return cv2.warpAffine(
        region, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def _padded(gray: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """The (side, side) part of ``gray`` from (x0, y0), edge pixels repeated beyond the image."""
    import cv2

    height, width = gray.shape[:2]
    pad = max(0, -x0, -y0, x0 + side - width, y0 + side - height)
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    return gray[y0 + pad : y0 + pad + side, x0 + pad : x0 + pad + side]


def _upright_crop(gray: np.ndarray, cx: float, cy: float, side: float, size: int) -> np.ndarray:
    import cv2

    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    square = _padded(gray, x0, y0, int(round(side)))
    shrink = square.shape[0] > size
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(square, (size, size), interpolation=interpolation)
