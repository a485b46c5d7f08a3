"""Loading any ferlab classifier file (fully connected ``.npz`` or CNN) behind one interface.

Every classifier has ``class_names``, ``input_shape`` and ``predict_proba(images, raw=True)``, which
takes uint8 images shaped like the training images and applies the model's own preprocessing.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Protocol

import numpy as np

from ferlab.errors import ModelFileError


class Classifier(Protocol):
    class_names: list[str] | None
    input_shape: tuple[int, ...] | None

    def predict_proba(self, X: np.ndarray, *, raw: bool = False) -> np.ndarray: ...


def model_kind(path: str | os.PathLike) -> str:
    """``fully_connected`` or ``cnn``, from the file's contents (not its name)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    if zipfile.is_zipfile(path):
        from ferlab.nn.model_io import read_model_meta

        return read_model_meta(path).get("kind", "unknown")
    return "cnn"


def load_classifier(path: str | os.PathLike) -> Classifier:
    """Load a fully connected or CNN model file."""
    kind = model_kind(path)
    if kind == "fully_connected":
        from ferlab.nn.model_io import load_model

        return load_model(path)
    if kind == "cnn":
        try:
            from ferlab.deep import load_cnn
        except ImportError:
            raise ModelFileError(
                f"{path}: not a fully connected ferlab model; reading a CNN model needs PyTorch: pip install 'ferlab[deep]'"
            ) from None
        return load_cnn(path)
    raise ModelFileError(f"{path}: unknown model kind {kind!r}")
