"""Face detectors whose model files ship with ferlab or its dependencies (nothing is downloaded).

Every detector has a ``name``, a ``version`` and ``detect(rgb) -> list[Detection]`` on a uint8 RGB
image (H, W, 3); thresholds and sizes are set once, on the object. The default is MediaPipe's
BlazeFace CNN (:mod:`ferlab.vision.blazeface`, shipped as ONNX); ``haar`` is OpenCV's frontal-face
Haar cascade, read from where ``opencv-python-headless`` 4.x installs it (OpenCV 5 dropped the
cascades, so ferlab pins below 5); ``none`` takes the whole image as one face.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ferlab.errors import FerlabError
from ferlab.vision.blazeface import BlazeFaceDetector
from ferlab.vision.detection import LANDMARKS, Detection

__all__ = ["DETECTORS", "LANDMARKS", "Detection", "HaarFaceDetector", "make_detector"]

DETECTORS = ("blazeface", "haar", "none")
# The detector `predict`, `EmotionRecognizer` and `serve` use unless told otherwise.
DEFAULT_DETECTOR = "blazeface"
# Haar searches faces down to this fraction of a photo's shorter side unless given a size in
# pixels: 72 pixels in a 1280x720 photo (its trade-off between misses, false faces and time).
HAAR_MIN_FACE = 0.1
CASCADE_FILE = "haarcascade_frontalface_default.xml"


class HaarFaceDetector:
    """OpenCV's frontal-face Haar cascade on grayscale images.

    ``min_face`` is the smallest face side searched in pixels of the photo (None:
    :data:`HAAR_MIN_FACE` of its shorter side; never below 24 pixels of the searched image, so
    about ``24 * longer side / search_side``); ``min_neighbors`` trades recall for fewer false
    detections; images whose longer side exceeds ``search_side`` pixels are searched shrunk to it
    (the search's cost grows with the pixel count), and boxes are given in the original's pixels;
    ``min_score`` drops faces whose level weight is lower.
    """

    name = "haar"
    version = CASCADE_FILE.removesuffix(".xml")

    def __init__(
        self,
        *,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_face: int | None = None,
        search_side: int = 640,
        min_score: float | None = None,
    ) -> None:
        if not 1.0 < scale_factor <= 2.0:
            raise FerlabError(f"scale_factor must be in (1, 2], got {scale_factor!r}")
        if not isinstance(min_neighbors, int) or min_neighbors < 0:
            raise FerlabError(f"min_neighbors must be an integer >= 0, got {min_neighbors!r}")
        if min_face is not None and (
            not isinstance(min_face, int) or isinstance(min_face, bool) or min_face < 1
        ):
            raise FerlabError(f"min_face must be a whole number of pixels >= 1, got {min_face!r}")
        if not isinstance(search_side, int) or search_side < 64:
            raise FerlabError(f"search_side must be an integer >= 64, got {search_side!r}")
        self.scale_factor, self.min_neighbors, self.min_face = scale_factor, min_neighbors, min_face
        self.search_side = search_side
        self.min_score = None if min_score is None else float(min_score)
        self._cascade = _load_cascade()

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in a uint8 RGB image (H, W, 3) or grayscale image (H, W), largest first."""
        import cv2

        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
        shrink = min(1.0, self.search_side / max(gray.shape[:2]))
        searched = gray
        if shrink < 1.0:
            size = (round(gray.shape[1] * shrink), round(gray.shape[0] * shrink))
            searched = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        if min(searched.shape[:2]) < 24:
            return []
        wanted = self.min_face or HAAR_MIN_FACE * min(gray.shape[:2])
        side = max(24, int(wanted * shrink))
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
            if self.min_score is None or s >= self.min_score
        ]
        return sorted(found, key=lambda d: d.w * d.h, reverse=True)


class WholeImageDetector:
    """No detection: the whole image is one face crop (for images that are already crops)."""

    name = "none"
    version = "whole-image"

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """One detection covering the whole image (H, W[, 3])."""
        return [Detection(0, 0, int(rgb.shape[1]), int(rgb.shape[0]), 1.0)]


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


def make_detector(
    name, *, min_face: int | None = None, min_score: float | None = None, threads: int = 1
):
    """The detector called ``name`` (one of :data:`DETECTORS`), or ``name`` itself when it is a
    detector object (anything with ``name`` and ``detect(rgb) -> list[Detection]``).

    ``min_face`` (pixels) and ``min_score`` left as None take the detector's own defaults;
    ``min_score`` applies to the CNN detector's [0, 1] score and to Haar's level weight.
    """
    if not isinstance(name, str) and callable(getattr(name, "detect", None)):
        return name
    if name == "blazeface":
        options = {"min_face": min_face, "min_score": min_score}
        return BlazeFaceDetector(
            threads=threads, **{k: v for k, v in options.items() if v is not None}
        )
    if name == "haar":
        return HaarFaceDetector(min_face=min_face, min_score=min_score)
    if name == "none":
        return WholeImageDetector()
    raise FerlabError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
