"""The original report's CNN interface: ``test_deep_fer_model(img_folder, model_path)``.

Run ``python -m ferlab.test_deep_fer_model [image_folder] [model_file]``; it prints one class index
per image, in lexicographic file-name order. Any ferlab model file works (CNN or fully connected).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ferlab import test_fer_model as _fc

DEFAULT_IMAGE_FOLDER = _fc.DEFAULT_IMAGE_FOLDER
DEFAULT_MODEL_FILE = "deep_fer_model"


def _model_file(model_path: str | Path) -> Path:
    """The report named model files without a suffix; accept ``deep_fer_model.safetensors``."""
    return _fc.model_file(model_path, ".safetensors")


def test_deep_fer_model(img_folder: str | Path, model_path: str | Path) -> np.ndarray:
    """Class indices (0..6) predicted for the images in ``img_folder``, in file-name order."""
    return _fc.test_fer_model(img_folder, _model_file(model_path))


test_deep_fer_model.__test__ = False  # not a pytest test, despite its name


def main(argv: list[str] | None = None) -> int:
    """Print the predictions for ``[image_folder] [model_file]``, one per line."""
    return _fc.main(argv, default_model=DEFAULT_MODEL_FILE, suffix=".safetensors", doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
