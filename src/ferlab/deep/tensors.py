"""Tensor files: safetensors with JSON metadata in the header, no pickle (CNN models, checkpoints).

A CNN model file's header holds its model record (:mod:`ferlab.modelfile`) as JSON under
``ferlab``; a checkpoint's holds its own metadata under the same key, beside ``format``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ferlab.common.files import atomic_path
from ferlab.errors import ModelFileError
from ferlab.modelfile import FORMAT_VERSION as MODEL_FORMAT_VERSION
from ferlab.modelfile import (
    FORMATS,
    RECORD_KEY,
    check_record,
    cnn_record,
    encode_record,
    is_current,
    new_record,
    parse_json,
)

MODEL_FORMAT = FORMATS["cnn"]
CHECKPOINT_FORMAT = "ferlab-cnn-checkpoint"
FORMAT_VERSION = 1  # of checkpoints (model files: MODEL_FORMAT_VERSION, the model record's)
META_KEY = RECORD_KEY


def write_tensors(
    path: str | os.PathLike,
    meta: dict,
    tensors: dict[str, torch.Tensor],
    header: dict[str, str] | None = None,
) -> Path:
    """Write tensors and JSON metadata as one safetensors file, atomically (``header``, when
    given, is the file's whole string header instead of one built from ``meta``)."""
    path = Path(path)
    if header is None:
        header = {"format": meta["format"], META_KEY: json.dumps(meta)}
    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(cpu, str(tmp), metadata=header)
    return path


def model_record(meta: dict) -> dict:
    """The model record of a CNN's in-memory metadata (as :func:`ferlab.deep.io.model_meta`
    builds it: the training record under ``training_info``), checked."""
    shape = meta.get("input_shape")
    return new_record(
        "cnn",
        name=meta.get("name"),
        architecture=meta.get("architecture"),
        class_names=list(meta["class_names"]),
        input_shape=[48, 48] if shape is None else list(shape),
        preprocessing=meta.get("preprocessing"),
        training=meta.get("training_info", meta.get("training")) or {},
    )


def memory_meta(record: dict) -> dict:
    """A CNN's in-memory metadata from its model record (the inverse of :func:`model_record`)."""
    meta = {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "kind": "cnn"}
    for field in ("ferlab_version", "architecture", "class_names", "input_shape"):
        meta[field] = record[field]
    if record["name"] is not None:
        meta["name"] = record["name"]
    return meta | {"preprocessing": record["preprocessing"], "training_info": record["training"]}


def write_model(path: str | os.PathLike, meta: dict, tensors: dict[str, torch.Tensor]) -> Path:
    """Write a CNN model file: ``tensors`` and the model record of ``meta``, atomically."""
    return write_tensors(
        path, meta, tensors, header={RECORD_KEY: encode_record(model_record(meta))}
    )


def _header_record(header: dict, path) -> dict:
    """The checked model record of a CNN file's header, of either layout."""
    if RECORD_KEY not in header:
        raise ModelFileError(f"{path}: a safetensors file without ferlab metadata")
    raw = parse_json(header[RECORD_KEY], path, f"the {RECORD_KEY} header field")
    return check_record(raw, path, "cnn") if is_current(raw) else cnn_record(raw, path)


def read_model(
    path: str | os.PathLike, check: Callable[[dict, dict[str, tuple[int, ...]]], None]
) -> tuple[dict, dict[str, torch.Tensor]]:
    """The model record and tensors of a CNN model file. ``check(record, shapes)`` sees the
    record and every tensor's shape before any tensor is read, and raises to refuse the file."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            record = _header_record(handle.metadata() or {}, path)
            names = list(handle.keys())
            check(record, {name: tuple(handle.get_slice(name).get_shape()) for name in names})
            tensors = {name: handle.get_tensor(name) for name in names}
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise ModelFileError(
            f"{path}: not a ferlab CNN file (unreadable as safetensors: {exc})"
        ) from None
    except ModelFileError:
        raise
    except ValueError as exc:
        raise ModelFileError(f"{path}: not a ferlab CNN file ({exc})") from None
    return record, tensors


def read_tensors(
    path: str | os.PathLike, expected_format: str
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a file written by :func:`write_tensors`; any other file is a clear ModelFileError."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            header = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelFileError(
            f"{path}: not a ferlab CNN file (unreadable as safetensors: {exc})"
        ) from None
    try:
        meta = json.loads(header[META_KEY])
    except (KeyError, json.JSONDecodeError):
        raise ModelFileError(f"{path}: a safetensors file without ferlab metadata") from None
    found = meta.get("format") if isinstance(meta, dict) else None
    if found != expected_format:
        raise ModelFileError(f"{path}: expected a {expected_format!r} file, found {found!r}")
    newest = MODEL_FORMAT_VERSION if expected_format == MODEL_FORMAT else FORMAT_VERSION
    if meta.get("format_version", 0) > newest:
        raise ModelFileError(
            f"{path}: written by a newer ferlab (format {meta['format_version']}); upgrade ferlab"
        )
    return meta, tensors
