"""Face detectors whose model files install with ferlab's dependencies (nothing is downloaded).

The default is OpenCV's frontal-face Haar cascade, read from where ``opencv-python-headless`` 4.x
installs it (OpenCV 5 dropped the cascades, so ferlab pins below 5).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferlab.errors import FerlabError

DETECTORS = ("haar", "none")
# The detector `predict`, `EmotionRecognizer` and `serve` use unless told otherwise.
DEFAULT_DETECTOR = "haar"
# Faces smaller than this fraction of a photo's shorter side are not searched: 72 pixels in a
# 1280x720 photo. Searching down to 5% takes about 1.5 times as long (group photos may need it).
MIN_FACE = 0.1
CASCADE_FILE = "haarcascade_frontalface_default.xml"


@dataclass(frozen=True)
class Detection:
    """A face box in pixels of the analysed image: left ``x``, top ``y``, width ``w``, height ``h``.

    ``score`` is the detector's confidence (for Haar, the last stage's level weight: higher is
    surer, not a probability; 1.0 for the whole-image detector).
    """

    x: int
    y: int
    w: int
    h: int
    score: float


class HaarFaceDetector:
    """OpenCV's frontal-face Haar cascade on grayscale images.

    ``min_face`` is the smallest face side searched, as a fraction of the image's shorter side
    (never below 24 pixels of the searched image); ``min_neighbors`` trades recall for fewer false
    detections; images whose longer side exceeds ``search_side`` pixels are searched shrunk to it
    (the search's cost grows with the pixel count), and boxes are given in the original's pixels.
    """

    name = "haar"
    version = CASCADE_FILE.removesuffix(".xml")

    def __init__(
        self,
        *,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_face: float = MIN_FACE,
        search_side: int = 640,
    ) -> None:
        if not 1.0 < scale_factor <= 2.0:
            raise FerlabError(f"scale_factor must be in (1, 2], got {scale_factor!r}")
        if not isinstance(min_neighbors, int) or min_neighbors < 0:
            raise FerlabError(f"min_neighbors must be an integer >= 0, got {min_neighbors!r}")
        if not 0.0 <= min_face < 1.0:
            raise FerlabError(f"min_face must be in [0, 1), got {min_face!r}")
        if not isinstance(search_side, int) or search_side < 64:
            raise FerlabError(f"search_side must be an integer >= 64, got {search_side!r}")
        self.scale_factor, self.min_neighbors, self.min_face = scale_factor, min_neighbors, min_face
        self.search_side = search_side
        self._cascade = _load_cascade()

    def detect(self, gray: np.ndarray) -> list[Detection]:
        """Faces in a uint8 grayscale image (H, W), largest first."""
        import cv2

        shrink = min(1.0, self.search_side / max(gray.shape[:2]))
        searched = gray
        if shrink < 1.0:
            size = (round(gray.shape[1] * shrink), round(gray.shape[0] * shrink))
            searched = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        if min(searched.shape[:2]) < 24:
            return []
        side = max(24, int(min(searched.shape[:2]) * self.min_face))
        boxes, _, weights = self._cascade.detectMultiScale3(
            searched,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(side, side),
            outputRejectLevels=True,
        )
        found = [
            Detection(*(round(int(v) / shrink) for v in (x, y, w, h)), round(float(s), 4))
            for (x, y, w, h), s in zip(boxes, np.ravel(weights), strict=True)
        ]
        return sorted(found, key=lambda d: d.w * d.h, reverse=True)


class WholeImageDetector:
    """No detection: the whole image is one face crop (for images that are already crops)."""

    name = "none"
    version = "whole-image"

    def detect(self, gray: np.ndarray) -> list[Detection]:
        """One detection covering the whole image (H, W)."""
        return [Detection(0, 0, int(gray.shape[1]), int(gray.shape[0]), 1.0)]


def _load_cascade():
    try:
        import cv2
    except ImportError:
        raise FerlabError(
            "face detection needs OpenCV: pip install 'opencv-python-headless<5'"
        ) from None
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = Path(folder or "") / CASCADE_FILE
    if not folder or not path.is_file():
        raise FerlabError(
            f"OpenCV {cv2.__version__} has no {CASCADE_FILE} (OpenCV 5 dropped the cascades); "
            "install 'opencv-python-headless<5'"
        )
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise FerlabError(f"{path}: OpenCV could not read the face cascade")
    return cascade


def make_detector(name, *, min_face: float = MIN_FACE):
    """The detector called ``name`` (one of :data:`DETECTORS`), or ``name`` itself when it is a
    detector object (anything with ``name`` and ``detect(gray) -> list[Detection]``)."""
    if not isinstance(name, str) and callable(getattr(name, "detect", None)):
        return name
    if name == "haar":
        return HaarFaceDetector(min_face=min_face)
    if name == "none":
        return WholeImageDetector()
    raise FerlabError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
