"""Model and checkpoint files: one ``.npz`` of arrays plus a JSON metadata entry, never a pickle."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ferlab import __version__
from ferlab.errors import ModelFileError

META_KEY = "__meta__"
MODEL_FORMAT = "ferlab-model"


def write_npz(path: str | os.PathLike, meta: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Atomically write arrays and JSON metadata to ``path`` (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {META_KEY: np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)}
    for name, value in arrays.items():
        array = np.asarray(value)
        if array.dtype == object:
            raise TypeError(
                f"array {name!r} has dtype object; model files hold numeric arrays only"
            )
        payload[name] = array
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **payload)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def read_npz(
    path: str | os.PathLike, expected_format: str | None = None
) -> tuple[dict, dict[str, np.ndarray]]:
    """Read metadata and arrays written by :func:`write_npz`; refuse pickles and foreign files."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise ModelFileError(f"{path}: not a ferlab file (a bare array, not an archive)")
            arrays = {name: archive[name] for name in archive.files}
    except ModelFileError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise ModelFileError(
                f"{path}: the file holds pickled objects; refused (ferlab files never contain code)"
            ) from None
        raise ModelFileError(f"{path}: not a valid ferlab file ({exc})") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
        raise ModelFileError(f"{path}: corrupt or truncated file ({exc})") from None
    if META_KEY not in arrays:
        raise ModelFileError(f"{path}: not a ferlab file (no metadata entry)")
    try:
        meta = json.loads(arrays.pop(META_KEY).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: unreadable metadata ({exc})") from None
    if not isinstance(meta, dict) or (expected_format and meta.get("format") != expected_format):
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ModelFileError(f"{path}: expected a {expected_format} file, found {found!r}")
    return meta, arrays


def save_model(model, path: str | os.PathLike) -> Path:
    """Save a :class:`FullyConnectedNet` with its preprocessing and class names."""
    meta = {
        "format": MODEL_FORMAT,
        "kind": "fully_connected",
        "ferlab_version": __version__,
        "architecture": model.config(),
        "class_names": model.class_names,
        "input_shape": list(model.input_shape) if model.input_shape else None,
        "preprocessing": None,
        "trainable": model.trainable,
        "training": model.training_info,
    }
    arrays = {f"param/{name}": value for name, value in model.params.items()}
    if model.preprocessor is not None:
        pre_meta, pre_arrays = model.preprocessor.state()
        meta["preprocessing"] = pre_meta
        arrays.update({f"preprocessing/{k}": v for k, v in pre_arrays.items()})
    return write_npz(path, meta, arrays)


def read_model_meta(path: str | os.PathLike) -> dict:
    """Metadata of a ferlab model file (to tell its kind before loading it)."""
    meta, _ = read_npz(path, expected_format=MODEL_FORMAT)
    return meta


def load_fully_connected(path: str | os.PathLike):
    """Load a fully connected model saved by :meth:`FullyConnectedNet.save`."""
    from ferlab.nn.fc_net import FullyConnectedNet
    from ferlab.nn.preprocess import Preprocessor

    meta, arrays = read_npz(path, expected_format=MODEL_FORMAT)
    if meta.get("kind") != "fully_connected":
        raise ModelFileError(f"{path}: a {meta.get('kind')!r} model, not a fully connected one")
    try:
        arch = meta["architecture"]
        model = FullyConnectedNet(
            arch["input_dim"],
            arch["hidden_dims"],
            arch["num_classes"],
            dropout=arch["dropout"],
            reg=arch["reg"],
            weight_scale=arch["weight_scale"],
            dtype=np.dtype(arch["dtype"]),
            seed=arch["seed"],
        )
        for name, value in model.params.items():
            stored = arrays[f"param/{name}"]
            if stored.shape != value.shape:
                raise ModelFileError(
                    f"{path}: parameter {name} has shape {stored.shape}, expected {value.shape}"
                )
            model.params[name] = stored.astype(model.dtype, copy=False)
        if meta.get("preprocessing"):
            model.preprocessor = Preprocessor.from_state(
                meta["preprocessing"], {"mean": arrays["preprocessing/mean"]}
            )
        model.class_names = meta.get("class_names")
        model.input_shape = tuple(meta["input_shape"]) if meta.get("input_shape") else None
        model.trainable.update(meta.get("trainable") or {})
        model.training_info = meta.get("training")
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: incomplete or tampered model file ({exc!r})") from None
    return model
