"""CNN model files: the network's weights and the metadata to rebuild and use it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ferlab import __version__
from ferlab.deep.classifier import CNNClassifier
from ferlab.deep.model import build_cnn
from ferlab.deep.tensors import FORMAT_VERSION, MODEL_FORMAT, read_tensors, write_tensors
from ferlab.errors import ModelFileError


def model_meta(
    architecture: dict,
    class_names: list[str],
    mean: float,
    std: float,
    crop: int,
    training_info: dict | None = None,
) -> dict:
    """The JSON a CNN model file carries besides its weights."""
    return {
        "format": MODEL_FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": "cnn",
        "ferlab_version": __version__,
        "architecture": architecture,
        "class_names": list(class_names),
        "input_shape": [48, 48],
        "preprocessing": {"mean": float(mean), "std": float(std), "crop": int(crop)},
        "training_info": training_info or {},
    }


def save_cnn(module: torch.nn.Module, meta: dict, path: str | os.PathLike) -> Path:
    """Write a CNN's weights and metadata (see :func:`model_meta`)."""
    return write_tensors(path, meta, module.state_dict())


def load_cnn(path: str | os.PathLike):
    """Load a CNN model file as a :class:`~ferlab.deep.classifier.CNNClassifier`.

    The architecture is first built on PyTorch's ``meta`` device (no memory) and its shapes
    compared with the stored tensors, so a tampered file cannot make the loader allocate more
    than it holds; non-finite weights and a non-positive scale are refused.
    """
    meta, tensors = read_tensors(path, MODEL_FORMAT)
    try:
        with torch.device("meta"):
            skeleton = build_cnn(meta["architecture"])
        expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
        found = {name: tuple(t.shape) for name, t in tensors.items()}
        if expected != found:
            wrong = sorted(
                k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k)
            )
            raise ModelFileError(
                f"{path}: the stored tensors do not match the architecture ({', '.join(wrong[:3])})"
            )
        bad = [
            n for n, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()
        ]
        if bad:
            raise ModelFileError(f"{path}: non-finite values in {', '.join(bad[:3])}")
        preprocessing = meta["preprocessing"]
        names = meta["class_names"]
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise ModelFileError(f"{path}: class_names must be a list of names")
        std = float(preprocessing["std"])
        if not (std > 0 and np.isfinite(std) and np.isfinite(float(preprocessing["mean"]))):
            raise ModelFileError(f"{path}: the preprocessing std must be a positive number")
        module = build_cnn(meta["architecture"])
        module.load_state_dict(tensors, strict=True)
        return CNNClassifier(
            module, names, preprocessing["mean"], std, preprocessing["crop"], meta=meta
        )
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: inconsistent CNN model file ({exc})") from None
