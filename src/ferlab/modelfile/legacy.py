"""Model files written before the one record layout, read into a record (format 2).

How each old layout is recognised (the record itself always sits under ``ferlab``; see
:mod:`ferlab.modelfile.record`):

- fully connected ``.npz`` (format 0, no version): JSON in the member ``__meta__`` with
  ``format: "ferlab-model"`` and no ``format_version``; its training record is ``training``.
- CNN ``.safetensors`` (format 1): the ``ferlab`` header field with ``format: "ferlab-cnn"``
  and ``format_version: 1``; its training record is ``training_info``.
- ONNX (format 1): no ``ferlab`` entry in ``metadata_props`` but separate ``ferlab_*`` entries:
  ``ferlab_class_names`` (JSON, required), ``ferlab_name``, ``ferlab_version``,
  ``ferlab_training_info`` (JSON), ``ferlab_quantization``, ``ferlab_temperature`` (JSON) and
  the descriptive ``ferlab_input``. The shipped model is such a file.

Each reader checks the old fields as the loaders of that time did (with their messages) and
returns a record that :func:`~ferlab.modelfile.record.check_record` has checked.
"""

from __future__ import annotations

import os

from ferlab.errors import ModelFileError
from ferlab.modelfile.record import (
    FORMAT_VERSION,
    FORMATS,
    check_record,
    check_temperatures,
    parse_json,
)

TEMPERATURE_KEY = "ferlab_temperature"
ONNX_PREFIX = "ferlab_"
ONNX_FIELDS = ("class_names", "input", "name", "version", "training_info", "quantization")
ONNX_KEYS = {ONNX_PREFIX + field for field in ONNX_FIELDS} | {TEMPERATURE_KEY}
# The fields each old layout held that the record keeps (under the record's own names).
FC_FIELDS = ("ferlab_version", "architecture", "class_names", "input_shape", "preprocessing")
CNN_FIELDS = ("ferlab_version", "name", "architecture", "class_names", "input_shape")


def is_current(raw) -> bool:
    """Whether decoded metadata ``raw`` claims the one layout (format 2 or newer)."""
    version = raw.get("format_version") if isinstance(raw, dict) else None
    return isinstance(version, int) and not isinstance(version, bool) and version >= 2


def _base(kind: str) -> dict:
    return {"format": FORMATS[kind], "format_version": FORMAT_VERSION, "kind": kind}


def fully_connected_record(meta: dict, path: str | os.PathLike) -> dict:
    """The record of a fully connected ``.npz`` written before format 2 (``__meta__`` JSON)."""
    if meta.get("format") != FORMATS["fully_connected"]:
        raise ModelFileError(
            f"{path}: expected a {FORMATS['fully_connected']} file, "
            f"found {str(meta.get('format'))[:40]!r}"
        )
    if meta.get("kind") != "fully_connected":
        raise ModelFileError(
            f"{path}: a {str(meta.get('kind'))[:40]!r} model, not a fully connected one"
        )
    record = _base("fully_connected") | {field: meta.get(field) for field in FC_FIELDS}
    record |= {"trainable": meta.get("trainable") or None, "training": meta.get("training")}
    return check_record(record, path, "fully_connected")


def cnn_record(meta, path: str | os.PathLike) -> dict:
    """The record of a CNN ``.safetensors`` of format 1 (its ``ferlab`` header JSON)."""
    found = meta.get("format") if isinstance(meta, dict) else None
    if found != FORMATS["cnn"]:
        raise ModelFileError(
            f"{path}: expected a {FORMATS['cnn']!r} file, found {str(found)[:40]!r}"
        )
    version = meta.get("format_version", 1)
    if isinstance(version, bool) or version not in (0, 1):
        raise ModelFileError(f"{path}: format_version must be a positive integer, got {version!r}")
    record = _base("cnn") | {field: meta.get(field) for field in CNN_FIELDS}
    record |= {"preprocessing": meta.get("preprocessing"), "training": meta.get("training_info")}
    return check_record(record, path, "cnn")


def _onnx_class_names(props: dict[str, str], path) -> list[str]:
    try:
        names = parse_json(props["ferlab_class_names"], path, "ferlab_class_names")
    except (KeyError, ModelFileError):
        raise ModelFileError(f"{path}: an ONNX file without ferlab class names") from None
    if (
        not isinstance(names, list)
        or not 2 <= len(names) <= 1000
        or not all(isinstance(n, str) and n for n in names)
    ):
        raise ModelFileError(f"{path}: ferlab_class_names must be a list of 2 to 1000 names")
    return names


def onnx_record(props: dict[str, str], path: str | os.PathLike) -> dict:
    """The record of an ONNX file of format 1 (separate ``ferlab_*`` metadata entries)."""
    record = _base("onnx") | {"class_names": _onnx_class_names(props, path)}
    for field, key in (("name", "name"), ("ferlab_version", "version"), ("quantization",) * 2):
        record[field] = props.get(ONNX_PREFIX + key)
    if "ferlab_training_info" in props:
        try:
            record["training"] = parse_json(props["ferlab_training_info"], path, "training")
        except ModelFileError:
            raise ModelFileError(f"{path}: ferlab_training_info is not JSON") from None
    if TEMPERATURE_KEY in props:
        value = parse_json(props[TEMPERATURE_KEY], path, TEMPERATURE_KEY)
        record["temperature"] = check_temperatures(value, path, TEMPERATURE_KEY)
    return check_record(record, path, "onnx")
