"""The original report's interface: ``test_fer_model`` and ``test_deep_fer_model``.

``test_fer_model(img_folder, model_path)`` and ``test_deep_fer_model(img_folder, model_path)``
return one class index per image, in lexicographic file-name order; the report named model files
without a suffix (``fer_model``, ``deep_fer_model``), which both accept. Any ferlab model file
works with either. This module is named so that pytest never collects it.

Run ``python -m ferlab.inference.compat [--cnn] [image_folder] [model_file]``; it prints one class index
per image (``--cnn``: the default model is ``deep_fer_model.safetensors``).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np

from ferlab.errors import FerlabError

DEFAULT_IMAGE_FOLDER = "datasets/FER2013/Test"
DEFAULT_MODEL_FILE = "fer_model"
DEFAULT_DEEP_MODEL_FILE = "deep_fer_model"
USAGE = "usage: python -m ferlab.inference.compat [--cnn] [image_folder] [model_file]"


def model_file(model_path: str | Path, suffix: str = ".npz") -> Path:
    """The report named model files without a suffix; accept ``fer_model`` for ``fer_model.npz``."""
    path = Path(model_path)
    if not path.exists() and path.with_name(path.name + suffix).is_file():
        return path.with_name(path.name + suffix)
    return path


def test_fer_model(img_folder: str | Path, model_path: str | Path) -> np.ndarray:
    """Class indices (0..6) predicted for the images in ``img_folder``, in file-name order."""
    from ferlab.inference.predict import predict_folder

    predictions = predict_folder(img_folder, model_file(model_path))
    return np.array([p.class_index for p in predictions], dtype=np.int64)


def test_deep_fer_model(img_folder: str | Path, model_path: str | Path) -> np.ndarray:
    """Class indices (0..6) predicted for the images in ``img_folder``, in file-name order;
    ``deep_fer_model`` finds ``deep_fer_model.safetensors``."""
    return test_fer_model(img_folder, model_file(model_path, ".safetensors"))


test_fer_model.__test__ = False  # not a pytest test, despite its name
test_deep_fer_model.__test__ = False


def main(argv: list[str] | None = None) -> int:
    """Print the predictions for ``[--cnn] [image_folder] [model_file]``, one per line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    cnn = "--cnn" in argv
    argv = [a for a in argv if a != "--cnn"]
    if len(argv) > 2 or any(a in ("-h", "--help") for a in argv):
        print(USAGE, file=sys.stderr)
        return 2
    folder = argv[0] if argv else DEFAULT_IMAGE_FOLDER
    default, suffix = (
        (DEFAULT_DEEP_MODEL_FILE, ".safetensors") if cnn else (DEFAULT_MODEL_FILE, ".npz")
    )
    model = model_file(argv[1] if len(argv) > 1 else default, suffix)
    warnings.showwarning = lambda msg, *a, **k: print(f"warning: {msg}", file=sys.stderr)
    try:
        predictions = test_fer_model(folder, model)
    except FerlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        for index in predictions:
            print(index)
    except BrokenPipeError:  # the reader (e.g. `| head`) stopped early: end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
