"""Reading fully connected model files (written by :meth:`FullyConnectedNet.save`), never a pickle."""

from __future__ import annotations

import os

import numpy as np

from ferlab.arrays import read_npz
from ferlab.errors import ModelFileError
from ferlab.nn.fc_net import MODEL_FORMAT, FullyConnectedNet
from ferlab.nn.preprocess import Preprocessor


def read_model_meta(path: str | os.PathLike) -> dict:
    """Metadata of a ferlab model file (to tell its kind before loading it)."""
    meta, _ = read_npz(path, expected_format=MODEL_FORMAT)
    return meta


def load_fully_connected(path: str | os.PathLike):
    """Load a fully connected model saved by :meth:`FullyConnectedNet.save`."""
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
        model.training_info = meta.get("training") or {}
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: incomplete or tampered model file ({exc!r})") from None
    return model
