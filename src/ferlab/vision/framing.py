"""Cutting a face out of a photo the way FER2013's faces are framed.

FER2013 crops are square, grayscale, 48x48 and hold the face from just above the eyebrows to just
below the chin. The Haar detector's box on such a crop is nearly the crop itself, so the crop is
the detector's box widened by :data:`FRAME_SCALE` about its centre; the value was measured on
FER2013 Training faces (``benchmarks/pipeline_accuracy.py --calibrate``), never on the test parts.
"""

from __future__ import annotations

import numpy as np

from ferlab.vision.detect import Detection

FRAME_SCALE = 1.03


def face_crop(
    gray: np.ndarray, box: Detection, *, size: int = 48, scale: float = FRAME_SCALE
) -> np.ndarray:
    """A uint8 (size, size) crop of the grayscale image (H, W) around ``box``.

    The crop is a square of side ``scale * max(w, h)`` centred on the box; parts outside the image
    repeat its edge pixels.
    """
    import cv2

    side = max(1.0, scale * max(box.w, box.h))
    cx, cy = box.x + box.w / 2.0, box.y + box.h / 2.0
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    x1, y1 = x0 + int(round(side)), y0 + int(round(side))
    height, width = gray.shape[:2]
    pad = max(0, -x0, -y0, x1 - width, y1 - height)
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    square = gray[y0:y1, x0:x1]
    shrink = square.shape[0] > size
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(square, (size, size), interpolation=interpolation)
