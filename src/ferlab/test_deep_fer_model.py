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
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) > 2 or any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    folder = argv[0] if argv else DEFAULT_IMAGE_FOLDER
    model = _model_file(argv[1] if len(argv) > 1 else DEFAULT_MODEL_FILE)
    return _fc.main([str(folder), str(model)])


if __name__ == "__main__":
    sys.exit(main())
