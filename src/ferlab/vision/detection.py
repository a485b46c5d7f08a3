"""A face found by a detector: its box, score and landmarks."""

from __future__ import annotations

import math
from dataclasses import dataclass

# The landmarks a CNN detector gives, in this order; "right" is the person's right (image left).
LANDMARKS = ("right_eye", "left_eye", "nose", "mouth", "right_ear", "left_ear")


@dataclass(frozen=True)
class Detection:
    """A face box in pixels of the analysed image: left ``x``, top ``y``, width ``w``, height ``h``.

    ``score`` is the detector's confidence: for ``blazeface`` its verifier's face score in [0, 1]
    (:func:`ferlab.vision.blazeface.face_score`); for ``haar`` the last stage's level weight (higher is surer, not a probability); 1.0
    for the whole-image detector. ``landmarks`` holds (x, y) pixels for each of
    :data:`LANDMARKS`, or is empty when the detector gives none (Haar, none).
    """

    x: int
    y: int
    w: int
    h: int
    score: float
    landmarks: tuple[tuple[float, float], ...] = ()

    def landmark(self, name: str) -> tuple[float, float] | None:
        """The (x, y) of landmark ``name`` (one of :data:`LANDMARKS`), or None without landmarks."""
        return self.landmarks[LANDMARKS.index(name)] if self.landmarks else None

    @property
    def roll(self) -> float:
        """The head's in-plane tilt in degrees from the eyes (clockwise in the image is positive);
        0 without landmarks."""
        if not self.landmarks:
            return 0.0
        (rx, ry), (lx, ly) = self.landmarks[0], self.landmarks[1]
        return math.degrees(math.atan2(ly - ry, lx - rx))
