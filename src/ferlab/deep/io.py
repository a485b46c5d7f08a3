"""CNN model files: the network's weights and the metadata to rebuild and use it."""

from __future__ import annotations

import os
from pathlib import Path

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
    """Load a CNN model file as a :class:`~ferlab.deep.classifier.CNNClassifier`."""
    meta, tensors = read_tensors(path, MODEL_FORMAT)
    try:
        module = build_cnn(meta["architecture"])
        module.load_state_dict(tensors, strict=True)
        preprocessing = meta["preprocessing"]
        return CNNClassifier(
            module,
            meta["class_names"],
            preprocessing["mean"],
            preprocessing["std"],
            preprocessing["crop"],
            meta=meta,
        )
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: inconsistent CNN model file ({exc})") from None
