"""The model record: one JSON metadata layout, with a format version, in every model file.

Every ferlab model file (fully connected ``.npz``, CNN ``.safetensors``, exported ``.onnx``)
carries one JSON object under the key ``ferlab`` (an ``.npz`` member of UTF-8 bytes, a
safetensors header field, an ONNX ``metadata_props`` entry). Its fields:

``format``          the file's format name, one per kind (:data:`FORMATS`)
``format_version``  :data:`FORMAT_VERSION` (2); files written before the one layout are read by
                    :mod:`ferlab.modelfile.legacy`, files of a newer version are refused
``kind``            ``fully_connected``, ``cnn`` or ``onnx``
``ferlab_version``  the ferlab that wrote the file
``name``            the model's name (None when unnamed)
``class_names``     the classes, in output order (None only for an unnamed fully connected net)
``input_shape``     the image shape (H, W) the model takes (None when unknown)
``preprocessing``   how raw uint8 pixels become the network's input: the fully connected net's
                    transform (``mode``, ``scale``; its mean is an array), the CNN's ``mean``,
                    ``std`` and ``crop`` (for ONNX: those the graph applies inside itself)
``architecture``    what rebuilds the network (a CNN's widths and convs, the net's layer sizes)
``training``        the training record: the data settings and seed it was trained with
``trainable``       which fully connected layers train (None for other kinds)
``temperature``     the calibration temperature of each test-time augmentation choice, or None
``quantization``    how the weights were quantised, or None

:func:`decode_record` is the one reader: it refuses over-long or deeply nested text, unknown
fields and every field of the wrong type or range, in one line, before anything is allocated.
"""

from __future__ import annotations

import json
import math
import os

from ferlab import __version__
from ferlab.errors import ModelFileError
from ferlab.evaluation.calibration import TTA_VIEWS, check_temperature

RECORD_KEY = "ferlab"
FORMAT_VERSION = 2
FORMATS = {"fully_connected": "ferlab-model", "cnn": "ferlab-cnn", "onnx": "ferlab-onnx"}
FIELDS = (
    "format", "format_version", "kind", "ferlab_version", "name", "class_names", "input_shape",
    "preprocessing", "architecture", "training", "trainable", "temperature", "quantization",
)  # fmt: skip
MAX_RECORD_CHARS = 1_000_000
MAX_CLASSES = 1000
MAX_TEXT = 1000
MAX_SIDE = 4096


def new_record(kind: str, **fields) -> dict:
    """A checked record of ``kind`` (format, format_version and ferlab_version filled in); the
    other fields as keywords, those left out None (``training``: empty)."""
    record = {name: None for name in FIELDS} | {"training": {}, "ferlab_version": __version__}
    record |= {"format": FORMATS.get(kind), "format_version": FORMAT_VERSION, "kind": kind}
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise TypeError(f"unknown model record fields {sorted(unknown)}")
    return check_record(record | fields, "model", kind)


def encode_record(record: dict) -> str:
    """The record as the JSON text a file stores (checked first; never NaN or infinity)."""
    checked = check_record(record, "model", record.get("kind"))
    return json.dumps(checked, allow_nan=False)


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str | bytes, path: str | os.PathLike, what: str):
    """JSON ``text`` of at most :data:`MAX_RECORD_CHARS`, strictly (no NaN), or ModelFileError."""
    if len(text) > MAX_RECORD_CHARS:
        raise ModelFileError(
            f"{path}: {what} is {len(text):,} characters, more than the {MAX_RECORD_CHARS:,} "
            "accepted"
        )
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise ModelFileError(f"{path}: {what} is not readable JSON ({reason})") from None


def decode_record(text: str | bytes, path: str | os.PathLike, kind: str) -> dict:
    """The record stored as ``text`` in a file of ``kind``, every field checked."""
    return check_record(parse_json(text, path, f"the {RECORD_KEY} record"), path, kind)


def _text(value, path, field: str, limit: int = MAX_TEXT) -> None:
    if value is not None and not (isinstance(value, str) and len(value) <= limit):
        raise ModelFileError(f"{path}: {field} must be text of at most {limit} characters")


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_version(record: dict, path) -> None:
    version = record.get("format_version")
    if not _int(version) or version < 1:
        raise ModelFileError(f"{path}: format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: written by a newer ferlab (format {version}); upgrade ferlab"
        )
    if version < FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: a format {version} record where format {FORMAT_VERSION} was expected"
        )


def _check_names(names, path) -> None:
    if names is None:
        return
    if (
        not isinstance(names, list)
        or len(names) > MAX_CLASSES
        or not all(isinstance(n, str) and len(n) <= MAX_TEXT for n in names)
    ):
        raise ModelFileError(f"{path}: class_names must be a list of at most {MAX_CLASSES} names")


def _check_shape(shape, path) -> None:
    if shape is None:
        return
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 3
        or not all(_int(side) and 1 <= side <= MAX_SIDE for side in shape)
    ):
        raise ModelFileError(
            f"{path}: input_shape must be 1 to 3 sizes from 1 to {MAX_SIDE}, got {shape!r}"
        )


def check_temperatures(value, path, field: str = "temperature") -> dict[str, float]:
    """A temperature for every TTA choice, each a number in range; ModelFileError otherwise."""
    if not isinstance(value, dict) or set(value) != set(TTA_VIEWS):
        raise ModelFileError(
            f"{path}: {field} must give a temperature for each of {', '.join(TTA_VIEWS)}, "
            f"got {str(value)[:80]!r}"
        )
    try:
        return {
            mode: check_temperature(value[mode], f"its {mode!r} temperature") for mode in TTA_VIEWS
        }
    except ValueError as exc:
        raise ModelFileError(f"{path}: {field}: {exc}") from None


def check_record(record, path: str | os.PathLike, kind: str | None) -> dict:
    """``record`` with every field checked (a copy with missing fields None), for a file that
    must hold a model of ``kind`` (None: any kind)."""
    if not isinstance(record, dict):
        raise ModelFileError(f"{path}: the {RECORD_KEY} record must be a JSON object")
    _check_version(record, path)
    unknown = sorted(set(record) - set(FIELDS))
    if unknown:
        raise ModelFileError(f"{path}: unknown model record fields {', '.join(unknown)[:200]}")
    found = record.get("kind")
    if found not in FORMATS:
        raise ModelFileError(f"{path}: unknown model kind {str(found)[:40]!r}")
    if kind is not None and found != kind:
        raise ModelFileError(f"{path}: a {found!r} model record in a {kind} model file")
    if record.get("format") != FORMATS[found]:
        raise ModelFileError(
            f"{path}: expected a {FORMATS[found]} file, found {str(record.get('format'))[:40]!r}"
        )
    record = {name: record.get(name) for name in FIELDS}
    for field in ("ferlab_version", "name", "quantization"):
        _text(record[field], path, field)
    _check_names(record["class_names"], path)
    _check_shape(record["input_shape"], path)
    for field in ("preprocessing", "architecture", "trainable"):
        if record[field] is not None and not isinstance(record[field], dict):
            raise ModelFileError(f"{path}: {field} must be a JSON object or null")
    if record["training"] is None:
        record["training"] = {}
    if not isinstance(record["training"], dict):
        raise ModelFileError(f"{path}: training must be a JSON object")
    if record["temperature"] is not None:
        record["temperature"] = check_temperatures(record["temperature"], path)
    return record


def finite_number(value) -> bool:
    """Whether ``value`` is a real, finite JSON number (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
