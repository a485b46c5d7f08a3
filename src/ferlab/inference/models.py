"""One interface for every ferlab classifier, and one ``load_model`` for every model file kind.

Fully connected ``.npz`` files, CNN ``.safetensors`` files and exported ``.onnx`` files all load into
objects that take raw uint8 images shaped like the training images and apply the model's own
preprocessing: there is no flag to forget.
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ferlab.errors import ConfigError, ModelFileError

KINDS = ("fully_connected", "cnn", "onnx")
SUFFIXES = {"fully_connected": ".npz", "cnn": ".safetensors", "onnx": ".onnx"}


@runtime_checkable
class Classifier(Protocol):
    """What every loaded model offers.

    ``predict_proba(images)`` takes uint8 images (N, *input_shape) and returns float class
    probabilities (N, len(class_names)); ``predict(images)`` returns the class indices (N,).
    """

    class_names: list[str] | None
    input_shape: tuple[int, ...] | None

    def predict_proba(self, images: np.ndarray) -> np.ndarray: ...

    def predict(self, images: np.ndarray) -> np.ndarray: ...


def _is_safetensors(head: bytes) -> bool:
    if len(head) < 9:
        return False
    (header_size,) = struct.unpack("<Q", head[:8])
    return 0 < header_size < 100_000_000 and head[8:9] == b"{"


def _is_onnx(head: bytes) -> bool:
    # An ONNX ModelProto starts with field 1 (ir_version, a varint): tag byte 0x08.
    return len(head) >= 2 and head[0] == 0x08 and 0 < head[1] < 0x80


def model_kind(path: str | os.PathLike) -> str:
    """``fully_connected``, ``cnn`` or ``onnx``, from the file's contents (not its name)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    if zipfile.is_zipfile(path):
        from ferlab.nn.model_io import read_model_meta

        return read_model_meta(path).get("kind", "unknown")
    with open(path, "rb") as handle:
        head = handle.read(16)
    if _is_safetensors(head):
        return "cnn"
    if _is_onnx(head):
        return "onnx"
    raise ModelFileError(
        f"{path}: not a ferlab model file (fully connected .npz, CNN .safetensors or .onnx)"
    )


def _safetensors_record(path: Path) -> dict:
    """The model record in a safetensors file's header, read without PyTorch or any tensor."""
    import json

    from ferlab.modelfile import RECORD_KEY, check_record, cnn_record, is_current, parse_json

    with open(path, "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        if size > path.stat().st_size - 8:
            raise ModelFileError(f"{path}: truncated safetensors header")
        text = handle.read(size)
    try:
        header = json.loads(text).get("__metadata__") or {}
    except (ValueError, AttributeError, RecursionError):
        raise ModelFileError(f"{path}: unreadable safetensors header") from None
    if not isinstance(header, dict) or not isinstance(header.get(RECORD_KEY), str):
        raise ModelFileError(f"{path}: a safetensors file without ferlab metadata")
    raw = parse_json(header[RECORD_KEY], path, f"the {RECORD_KEY} header field")
    return check_record(raw, path, "cnn") if is_current(raw) else cnn_record(raw, path)


def model_record(path: str | os.PathLike) -> dict:
    """The checked model record (:mod:`ferlab.modelfile`) of any ferlab model file, of either
    layout, without loading its weights (``"shipped"`` names the shipped model)."""
    from ferlab.assets import resolve_model

    path = resolve_model(path)
    kind = model_kind(path)
    if kind == "cnn":
        return _safetensors_record(path)
    if kind == "onnx":
        from ferlab.inference.onnx_model import onnx_file_record, read_proto

        return onnx_file_record(read_proto(path)[0], path)
    from ferlab.nn.model_io import read_model_meta

    return read_model_meta(path)


def load_model(path: str | os.PathLike, *, threads: int = 1) -> Classifier:
    """Load any ferlab model file (``.npz``, ``.safetensors`` or ``.onnx``) as a :class:`Classifier`.

    ``threads`` bounds the threads an ONNX model runs on (the others run on the caller's settings).
    ``"shipped"`` names the emotion model that ships with ferlab.
    """
    from ferlab.assets import resolve_model

    path = resolve_model(path)
    kind = model_kind(path)
    if kind == "fully_connected":
        from ferlab.nn.model_io import load_fully_connected

        return load_fully_connected(path)
    if kind == "onnx":
        from ferlab.inference.onnx_model import load_onnx

        return load_onnx(path, threads=threads)
    if kind == "cnn":
        try:
            from ferlab.deep import load_cnn
        except ImportError:
            raise ModelFileError(
                f"{path}: a CNN file; reading it needs PyTorch: pip install 'ferlab[deep]' "
                "(or use its exported .onnx file)"
            ) from None
        return load_cnn(path)
    raise ModelFileError(f"{path}: unknown model kind {kind!r}")


def with_options(model: Classifier, *, tta: str = "none", device: str | None = None) -> Classifier:
    """Apply run-time options to a loaded model: test-time augmentation and the device.

    Models that run on a device (CNNs) go to ``device`` (default: CUDA when present, else the
    CPU); asking a model for an option it does not have is an error, not ignored.
    """
    if tta != "none":
        if not hasattr(model, "tta"):
            raise ConfigError("--tta applies to CNN models (.safetensors, .onnx) only")
        model.tta = tta
    if hasattr(model, "to"):
        from ferlab.deep.device import resolve_device

        model.to(resolve_device(device or "auto"))
    elif device is not None:
        raise ConfigError("--device applies to CNN models (.safetensors) only")
    return model
