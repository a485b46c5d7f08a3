"""Reading fully connected model files (written by :meth:`FullyConnectedNet.save`), never a pickle.

The file's model record (:mod:`ferlab.modelfile`) sits in the member ``ferlab``; files written
before it hold their metadata in ``__meta__`` without a format version, and still load.
"""

from __future__ import annotations

import os

import numpy as np

from ferlab.common.arrays import read_npz
from ferlab.errors import ModelFileError
from ferlab.modelfile import check_record, fully_connected_record
from ferlab.nn.fc_net import FullyConnectedNet
from ferlab.nn.preprocess import Preprocessor


def _record_of(meta: dict, path) -> dict:
    """The checked model record of an ``.npz``'s metadata, of either layout (the old one had
    no format version)."""
    if "format_version" in meta:
        return check_record(meta, path, None)
    return fully_connected_record(meta, path)


def read_model_meta(path: str | os.PathLike) -> dict:
    """The model record of an ``.npz`` model file, checked (to tell its kind before loading it)."""
    meta, _ = read_npz(path)
    return _record_of(meta, path)


def _checked_architecture(path, meta: dict, arrays: dict[str, np.ndarray]) -> dict:
    """The architecture, every field checked against the stored arrays before anything is built.

    A tampered file cannot make the loader allocate more than the file holds, nor load
    non-finite weights or a preprocessing that divides by zero.
    """
    arch = meta["architecture"]
    if not isinstance(arch, dict):
        raise ModelFileError(f"{path}: the model record has no architecture")
    if arch.get("dtype") not in ("float32", "float64"):
        raise ModelFileError(
            f"{path}: dtype must be float32 or float64, got {arch.get('dtype')!r:.40}"
        )
    dims = [arch["input_dim"], *arch["hidden_dims"], arch["num_classes"]]
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dims):
        raise ModelFileError(f"{path}: layer sizes must be positive integers, got {dims}")
    for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:], strict=True), start=1):
        for name, shape in ((f"W{i}", (fan_in, fan_out)), (f"b{i}", (fan_out,))):
            stored = arrays.get(f"param/{name}")
            if stored is None or stored.shape != shape:
                found = None if stored is None else stored.shape
                raise ModelFileError(
                    f"{path}: parameter {name} has shape {found}, the architecture says {shape}"
                )
            if stored.dtype.kind != "f" or not np.isfinite(stored).all():
                raise ModelFileError(
                    f"{path}: parameter {name} holds non-finite or non-float values"
                )
    extra = {k for k in arrays if k.startswith("param/")} - {
        f"param/{p}{i}" for i in range(1, len(dims)) for p in "Wb"
    }
    if extra:
        raise ModelFileError(f"{path}: unexpected arrays {sorted(extra)}")
    names = meta.get("class_names")
    if names is not None and (
        not isinstance(names, list)
        or len(names) != dims[-1]
        or not all(isinstance(n, str) for n in names)
    ):
        raise ModelFileError(f"{path}: class_names must be {dims[-1]} names")
    shape = meta.get("input_shape")
    if shape is not None and (
        not isinstance(shape, list) or int(np.prod(shape)) != dims[0] or min(shape) < 1
    ):
        raise ModelFileError(f"{path}: input_shape {shape} does not give {dims[0]} inputs")
    pre = meta.get("preprocessing")
    if pre:
        mean = arrays.get("preprocessing/mean")
        scale = pre.get("scale")
        if mean is None or mean.size not in (1, dims[0]) or not np.isfinite(mean).all():
            raise ModelFileError(
                f"{path}: the preprocessing mean is missing, mis-sized or non-finite"
            )
        if not isinstance(scale, int | float) or not np.isfinite(scale) or scale <= 0:
            raise ModelFileError(
                f"{path}: the preprocessing scale must be a positive number, got {scale!r}"
            )
    return arch


def load_fully_connected(path: str | os.PathLike):
    """Load a fully connected model saved by :meth:`FullyConnectedNet.save`."""
    meta, arrays = read_npz(path)
    meta = _record_of(meta, path)
    if meta["kind"] != "fully_connected":
        raise ModelFileError(f"{path}: a {meta['kind']!r} model, not a fully connected one")
    try:
        arch = _checked_architecture(path, meta, arrays)
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
        for name in model.params:
            model.params[name] = arrays[f"param/{name}"].astype(model.dtype, copy=False)
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
