"""Emotions of every face in a photo: detect, frame like FER2013, classify."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

from ferlab.data.images import fit_image, target_format
from ferlab.errors import FerlabError
from ferlab.evaluation.calibration import TTA_VIEWS, UNCERTAIN
from ferlab.vision.detect import DEFAULT_DETECTOR, LANDMARKS, Detection, make_detector
from ferlab.vision.framing import Framing, face_crop
from ferlab.vision.photo import MAX_PIXELS, PhotoSource, read_photo

# The shipped default: the face and its mirror, averaged (better on validation at ~half the speed).
DEFAULT_TTA = "flip"


@dataclass
class Face:
    """One face: its ``box`` in the photo, the most likely ``emotion`` (``"uncertain"`` when its
    probability is under the recognizer's ``min_confidence``) and every probability."""

    box: Detection
    emotion: str
    probability: float
    probabilities: dict[str, float] = field(default_factory=dict)

    def top(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` most likely classes with their probabilities, most likely first."""
        return sorted(self.probabilities.items(), key=lambda item: -item[1])[:k]

    def to_dict(self) -> dict:
        """A JSON-ready record: box (x, y, w, h), score, landmarks ({name: [x, y]}, empty when
        the detector gives none), emotion, probability, probabilities."""
        return {
            "box": {k: v for k, v in asdict(self.box).items() if k in ("x", "y", "w", "h")},
            "score": self.box.score,
            "landmarks": {n: list(p) for n, p in zip(LANDMARKS, self.box.landmarks, strict=False)},
            "emotion": self.emotion,
            "probability": self.probability,
            "probabilities": dict(self.probabilities),
        }


class EmotionRecognizer:
    """Finds faces in photos and tells the emotion of each.

    ``EmotionRecognizer()`` uses the model that ships inside ferlab (ONNX Runtime, no PyTorch) and
    the BlazeFace CNN face detector that ships with it. ``model`` may be any ferlab model file or a
    loaded classifier; ``detector`` is ``"blazeface"``, ``"haar"`` (OpenCV's cascade), ``"none"``
    (each whole image is one face crop; any model input size then works) or a detector object;
    ``min_face`` is the smallest face searched, in pixels of the photo, and ``min_score`` the
    smallest face score kept (None: the detector's defaults). Faces are turned upright by the
    eyes' positions before they are framed like FER2013's crops, when the detector gives them.
    ``tta`` is the test-time augmentation: ``"flip"`` (the default) averages the probabilities of
    each face and its mirror image, ``"none"`` classifies the face alone (twice as fast); models
    without the option (``.npz``) run with ``"none"`` unless asked for more. A face whose top
    probability is under ``min_confidence`` gets the emotion ``"uncertain"``, its probabilities
    still given.

    Example::

        from ferlab import EmotionRecognizer
        for face in EmotionRecognizer().analyze("photo.jpg"):
            print(face.box, face.emotion, round(face.probability, 2))
    """

    def __init__(
        self,
        model: str | os.PathLike | object | None = None,
        *,
        detector: str | object = DEFAULT_DETECTOR,
        min_face: int | None = None,
        min_score: float | None = None,
        threads: int = 1,
        max_pixels: int = MAX_PIXELS,
        tta: str | None = None,
        min_confidence: float = 0.0,
    ) -> None:
        from ferlab.inference.models import load_model

        if model is None:
            from ferlab.assets import shipped_model_path

            model = shipped_model_path()
        self.model = (
            load_model(model, threads=threads) if isinstance(model, str | os.PathLike) else model
        )
        if tta is not None and tta not in TTA_VIEWS:
            raise FerlabError(f"tta must be one of {', '.join(TTA_VIEWS)}, got {tta!r}")
        if isinstance(min_confidence, bool) or not (
            isinstance(min_confidence, int | float) and 0.0 <= min_confidence <= 1.0
        ):
            raise FerlabError(f"min_confidence must be a number in [0, 1], got {min_confidence!r}")
        if hasattr(self.model, "tta"):
            self.model.tta = tta or DEFAULT_TTA
        elif tta not in (None, "none"):
            raise FerlabError(f"tta {tta!r} needs an ONNX or CNN model; this one has no views")
        self.tta = getattr(self.model, "tta", "none")
        self.min_confidence = float(min_confidence)
        self.detector = make_detector(
            detector, min_face=min_face, min_score=min_score, threads=threads
        )
        self.framing = getattr(self.detector, "framing", Framing())
        self.max_pixels = max_pixels
        shape = tuple(self.model.input_shape or ())
        if self.detector.name != "none" and (len(shape) != 2 or shape[0] != shape[1]):
            raise FerlabError(
                f"the {self.detector.name} face detector needs a square grayscale face model; this "
                f"one takes {shape or 'an unknown shape'}: use detector 'none'"
            )
        self.input_shape = shape
        self.class_names = list(self.model.class_names or [])

    def crops(self, rgb: np.ndarray) -> tuple[list[Detection], np.ndarray]:
        """The detections in an RGB image (H, W, 3) and the model inputs cut from them (N, *shape)."""
        if self.detector.name == "none":
            box = Detection(0, 0, int(rgb.shape[1]), int(rgb.shape[0]), 1.0)
            return [box], whole_image_input(rgb, self.input_shape)[None]
        boxes = self.detector.detect(rgb)
        gray = to_gray(rgb)
        size, framing = self.input_shape[0], self.framing
        crops = (
            np.stack(
                [
                    face_crop(
                        gray, b, size=size, scale=framing.scale, shift=framing.shift, angle=b.roll
                    )
                    for b in boxes
                ]
            )
            if boxes
            else None
        )
        return boxes, crops if crops is not None else np.zeros((0, size, size), np.uint8)

    def analyze_array(self, rgb: np.ndarray) -> list[Face]:
        """Faces in an RGB uint8 image (H, W, 3), largest first."""
        boxes, inputs = self.crops(rgb)
        if not boxes:
            return []
        proba = np.asarray(self.model.predict_proba(inputs), dtype=np.float64)
        names = self.class_names or [str(i) for i in range(proba.shape[1])]
        return [
            labelled_face(box, dict(zip(names, row, strict=True)), self.min_confidence)
            for box, row in zip(boxes, proba, strict=True)
        ]

    def analyze(self, image: PhotoSource) -> list[Face]:
        """Faces in a photo: a path, encoded bytes, a Pillow image, or an RGB (H, W, 3) array.

        Returns one :class:`Face` per face found, largest first; an empty list when there is none.
        """
        return self.analyze_array(read_photo(image, max_pixels=self.max_pixels))


def labelled_face(
    box: Detection, probabilities: dict[str, float], min_confidence: float = 0.0
) -> Face:
    """The face in ``box`` with its ``probabilities`` ({class: p}) and their most likely class,
    or ``"uncertain"`` when that class's probability is under ``min_confidence``."""
    rounded = {name: round(float(p), 6) for name, p in probabilities.items()}
    best = max(rounded, key=rounded.get)
    emotion = best if rounded[best] >= min_confidence else UNCERTAIN
    return Face(box, emotion, rounded[best], rounded)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """uint8 grayscale (H, W) of an RGB image (H, W, 3), with ITU-R 601 weights like Pillow's 'L'."""
    import cv2

    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def whole_image_input(rgb: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The whole RGB image (H, W, 3) as a model's input of ``shape`` (H, W) or (H, W, 3):
    converted and resized (bilinear) as crop folders are read (:func:`fit_image`)."""
    size, mode = target_format(shape)
    array, _ = fit_image(Image.fromarray(rgb), size, mode)
    return array.reshape(shape)
