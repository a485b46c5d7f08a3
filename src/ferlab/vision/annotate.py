"""Drawing face boxes and emotion labels on images and video frames."""

from __future__ import annotations

import numpy as np

from ferlab.vision.recognizer import Face

BOX_COLOR = (255, 200, 0)
TEXT_COLOR = (0, 0, 0)


def draw_faces(rgb: np.ndarray, faces: list[Face], tracks: list[int] | None = None) -> np.ndarray:
    """A copy of the RGB image (H, W, 3) with each face's box, eyes (when the detector gives
    them) and 'emotion 0.87' label drawn; with ``tracks``, each label starts with '#id'."""
    import cv2

    out = np.ascontiguousarray(rgb.copy())
    thickness = max(1, round(min(out.shape[:2]) / 300))
    font_scale = max(0.4, min(out.shape[:2]) / 900)
    for i, face in enumerate(faces):
        b = face.box
        cv2.rectangle(out, (b.x, b.y), (b.x + b.w, b.y + b.h), BOX_COLOR, thickness + 1)
        for x, y in face.box.landmarks[:2]:
            cv2.circle(out, (round(x), round(y)), thickness + 1, BOX_COLOR, -1)
        label = f"{face.emotion} {face.probability:.2f}"
        if tracks is not None:
            label = f"#{tracks[i]} {label}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        top = b.y - th - base - 4 if b.y - th - base - 4 >= 0 else b.y + b.h
        cv2.rectangle(out, (b.x, top), (b.x + tw + 4, top + th + base + 4), BOX_COLOR, -1)
        cv2.putText(
            out,
            label,
            (b.x + 2, top + th + 2),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            TEXT_COLOR,
            thickness,
            cv2.LINE_AA,
        )
    return out
