"""Tensor files: safetensors with JSON metadata in the header, no pickle (CNN models, checkpoints)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ferlab.errors import ModelFileError
from ferlab.files import atomic_path

MODEL_FORMAT = "ferlab-cnn"
CHECKPOINT_FORMAT = "ferlab-cnn-checkpoint"
FORMAT_VERSION = 1
META_KEY = "ferlab"


def write_tensors(path: str | os.PathLike, meta: dict, tensors: dict[str, torch.Tensor]) -> Path:
    """Write tensors and JSON metadata as one safetensors file, atomically."""
    path = Path(path)
    header = {"format": meta["format"], META_KEY: json.dumps(meta)}
    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(cpu, str(tmp), metadata=header)
    return path


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
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: written by a newer ferlab (format {meta['format_version']}); upgrade ferlab"
        )
    return meta, tensors
