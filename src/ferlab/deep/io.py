"""CNN model files: the network's weights and the model record to rebuild and use it.

The record (:mod:`ferlab.modelfile`) sits in the safetensors header under ``ferlab``; files of
format 1 (written before the one record layout) still load.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ferlab import __version__
from ferlab.deep.classifier import CNNClassifier
from ferlab.deep.model import build_cnn
from ferlab.deep.tensors import (
    MODEL_FORMAT,
    MODEL_FORMAT_VERSION,
    memory_meta,
    read_model,
    write_model,
)
from ferlab.errors import ModelFileError
from ferlab.modelfile.record import finite_number

MAX_BLOCKS = 16  # blocks of a stored architecture (the recipes use 4), and convolutions per block


def model_meta(
    architecture: dict,
    class_names: list[str],
    mean: float,
    std: float,
    crop: int,
    training_info: dict | None = None,
) -> dict:
    """A CNN's in-memory metadata (written to its file as the model record)."""
    return {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "kind": "cnn",
        "ferlab_version": __version__,
        "architecture": architecture,
        "class_names": list(class_names),
        "input_shape": [48, 48],
        "preprocessing": {"mean": float(mean), "std": float(std), "crop": int(crop)},
        "training_info": training_info or {},
    }


def save_cnn(module: torch.nn.Module, meta: dict, path: str | os.PathLike) -> Path:
    """Write a CNN's weights and model record (from ``meta``, see :func:`model_meta`)."""
    return write_model(path, meta, module.state_dict())


def _check_fields(record: dict, path) -> None:
    """The record's CNN fields: a bounded architecture, class names, a usable preprocessing."""
    arch, pre, names = record["architecture"], record["preprocessing"], record["class_names"]
    if not isinstance(arch, dict) or not all(
        isinstance(arch.get(key), list) and 1 <= len(arch[key]) <= MAX_BLOCKS
        for key in ("widths", "convs")
    ):
        raise ModelFileError(
            f"{path}: the architecture must give 1 to {MAX_BLOCKS} widths and convs"
        )
    if any(not isinstance(c, int) or not 1 <= c <= MAX_BLOCKS for c in arch["convs"]):
        raise ModelFileError(f"{path}: convs must be 1 to {MAX_BLOCKS} per block")
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise ModelFileError(f"{path}: class_names must be a list of names")
    if not isinstance(pre, dict) or not finite_number(pre.get("mean")):
        raise ModelFileError(f"{path}: the preprocessing mean must be a number")
    if not (finite_number(pre.get("std")) and pre["std"] > 0):
        raise ModelFileError(f"{path}: the preprocessing std must be a positive number")
    crop = pre.get("crop")
    if isinstance(crop, bool) or not isinstance(crop, int) or not 8 <= crop <= 48:
        raise ModelFileError(f"{path}: the preprocessing crop must be 8 to 48 pixels")


def _check_shapes(record: dict, shapes: dict[str, tuple[int, ...]], path) -> None:
    """The stored tensors' shapes against the architecture, built on PyTorch's ``meta`` device
    (no memory), before any tensor is read."""
    _check_fields(record, path)
    try:
        with torch.device("meta"):
            skeleton = build_cnn(record["architecture"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: inconsistent CNN model file ({exc})") from None
    expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    if expected != shapes:
        wrong = sorted(
            k for k in expected.keys() | shapes.keys() if expected.get(k) != shapes.get(k)
        )
        raise ModelFileError(
            f"{path}: the stored tensors do not match the architecture ({', '.join(wrong[:3])})"
        )


def load_cnn(path: str | os.PathLike) -> CNNClassifier:
    """Load a CNN model file as a :class:`~ferlab.deep.classifier.CNNClassifier`.

    The record is checked and the architecture first built on PyTorch's ``meta`` device (no
    memory) and its shapes compared with the stored tensors' before any is read, so a tampered
    file cannot make the loader allocate more than it holds; non-finite weights and a
    non-positive scale are refused.
    """
    record, tensors = read_model(path, lambda record, shapes: _check_shapes(record, shapes, path))
    bad = [n for n, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise ModelFileError(f"{path}: non-finite values in {', '.join(bad[:3])}")
    try:
        module = build_cnn(record["architecture"])
        module.load_state_dict(tensors, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: inconsistent CNN model file ({exc})") from None
    pre = record["preprocessing"]
    return CNNClassifier(
        module,
        record["class_names"],
        pre["mean"],
        pre["std"],
        pre["crop"],
        meta=memory_meta(record),
    )
