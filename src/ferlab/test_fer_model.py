"""The original report's interface: ``test_fer_model(img_folder, model_path)`` and its script.

Run ``python -m ferlab.test_fer_model [image_folder] [model_file]``; it prints one class index per
image, in lexicographic file-name order.
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


def model_file(model_path: str | Path, suffix: str = ".npz") -> Path:
    """The report named model files without a suffix; accept ``fer_model`` for ``fer_model.npz``."""
    path = Path(model_path)
    if not path.exists() and path.with_name(path.name + suffix).is_file():
        return path.with_name(path.name + suffix)
    return path


def test_fer_model(img_folder: str | Path, model_path: str | Path) -> np.ndarray:
    """Class indices (0..6) predicted for the images in ``img_folder``, in file-name order."""
    from ferlab.predict import predict_folder

    predictions = predict_folder(img_folder, model_file(model_path))
    return np.array([p.class_index for p in predictions], dtype=np.int64)


test_fer_model.__test__ = False  # not a pytest test, despite its name


def main(
    argv: list[str] | None = None,
    *,
    default_model: str = DEFAULT_MODEL_FILE,
    suffix: str = ".npz",
    doc: str = __doc__,
) -> int:
    """Print the predictions for ``[image_folder] [model_file]``, one per line."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) > 2 or any(a in ("-h", "--help") for a in argv):
        print(doc.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    folder = argv[0] if argv else DEFAULT_IMAGE_FOLDER
    model = model_file(argv[1] if len(argv) > 1 else default_model, suffix)
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
