"""Using a model on real pictures: reading photos and videos, finding faces, framing them."""

from ferlab.vision.detect import DETECTORS, Detection, HaarFaceDetector, WholeImageDetector
from ferlab.vision.photo import read_photo
from ferlab.vision.recognizer import EmotionRecognizer, Face

__all__ = [
    "DETECTORS",
    "Detection",
    "EmotionRecognizer",
    "Face",
    "HaarFaceDetector",
    "WholeImageDetector",
    "read_photo",
]
