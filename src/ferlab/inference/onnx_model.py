"""Exported models run with ONNX Runtime: no PyTorch, no training, nothing downloaded.

A ferlab ONNX file (written by ``ferlab cnn export``) has one input ``pixels``, float32 (N, H, W)
in 0..255 with the preprocessing inside the graph, one output ``probabilities`` (N, C), and its
model record (:mod:`ferlab.modelfile`: class names, name, training record, ...) as JSON in its
``metadata_props`` under ``ferlab``. Files written before the one layout hold separate
``ferlab_class_names``, ``ferlab_name``, ... entries instead; they still load.

A calibrated file's record also holds ``temperature``: ``{"none": T, "flip": T}``, the
temperature fitted for each test-time augmentation choice (:mod:`ferlab.evaluation.calibration`; an
old-layout file holds it as JSON under ``ferlab_temperature``). The graph
itself gives uncalibrated probabilities p; the loader applies ``softmax(log p / T)`` to each view
and averages the views, so every ferlab command gets calibrated probabilities.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ferlab.common.files import atomic_path, write_bytes_atomic
from ferlab.errors import ConfigError, DataError, FerlabError, ModelFileError
from ferlab.evaluation.calibration import TTA_VIEWS, average_views, check_temperature, flip_views
from ferlab.modelfile import RECORD_KEY, TEMPERATURE_KEY, decode_record, encode_record, onnx_record
from ferlab.modelfile.legacy import ONNX_KEYS
from ferlab.modelfile.record import check_temperatures, parse_json

MAX_ONNX_BYTES = 100 * 1024 * 1024
BATCH = 256
__all__ = ["TEMPERATURE_KEY", "OnnxClassifier", "load_onnx", "quantize_onnx", "set_temperature"]


class OnnxClassifier:
    """A classifier behind an ONNX Runtime session; see :class:`ferlab.inference.models.Classifier`."""

    def __init__(
        self,
        session,
        class_names: list[str],
        input_shape: tuple[int, int],
        meta: dict,
        file_bytes: bytes = b"",
    ):
        self.session = session
        self._file_bytes = file_bytes
        self.class_names = list(class_names)
        self.input_shape = tuple(input_shape)
        self.meta = meta
        self.training_info = meta.get("training_info", {})
        # Each TTA choice's temperature (1.0 each when the file is not calibrated).
        self.temperature = {mode: 1.0 for mode in TTA_VIEWS} | meta.get("temperature", {})
        self._tta = "none"

    @property
    def tta(self) -> str:
        """Test-time augmentation: ``none`` (one view) or ``flip`` (the face and its mirror)."""
        return self._tta

    @tta.setter
    def tta(self, mode: str) -> None:
        if mode not in TTA_VIEWS:
            raise ConfigError(
                f"an ONNX model's test-time augmentation is one of {', '.join(TTA_VIEWS)}, "
                f"got {mode!r}"
            )
        self._tta = mode

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C) of uint8 images (N, H, W): the mean over the views of
        ``tta``, each calibrated with that choice's stored temperature."""
        images = np.asarray(images)
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        if images.ndim != 3 or images.shape[1:] != self.input_shape:
            raise DataError(
                f"the model expects (N, {self.input_shape[0]}, {self.input_shape[1]}) grayscale "
                f"images, got shape {images.shape}"
            )
        out = np.zeros((len(images), len(self.class_names)), dtype=np.float32)
        temperature = self.temperature[self.tta]
        for start in range(0, len(images), BATCH):
            batch = images[start : start + BATCH].astype(np.float32)
            views = [self.session.run(None, {"pixels": v})[0] for v in flip_views(batch, self.tta)]
            if len(views) == 1 and temperature == 1.0:
                out[start : start + BATCH] = views[0]
            else:
                out[start : start + BATCH] = average_views(views, temperature)
        return out

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Most likely class index (N,) of uint8 images (N, H, W)."""
        return self.predict_proba(images).argmax(axis=1)

    @property
    def parameter_count(self) -> int:
        """Number of stored weights (the graph's initialisers)."""
        return int(self.meta.get("parameter_count", 0))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the ONNX file as it was loaded; return its path."""
        return write_bytes_atomic(path, self._file_bytes)


def _static_dims(value_info) -> list:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.shape.dim]


def _graph_shapes(proto, path) -> tuple[list, list]:
    """The free-batch input (N, H, W) and output (N, C) dims of a ferlab graph, checked."""
    graph = proto.graph
    inputs = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    if [i.name for i in inputs] != ["pixels"] or [o.name for o in graph.output] != [
        "probabilities"
    ]:
        raise ModelFileError(f"{path}: expected one input 'pixels' and one output 'probabilities'")
    in_dims = _static_dims(inputs[0].type.tensor_type)
    out_dims = _static_dims(graph.output[0].type.tensor_type)
    if len(in_dims) != 3 or not all(isinstance(d, int) and 8 <= d <= 1024 for d in in_dims[1:]):
        raise ModelFileError(f"{path}: input 'pixels' must be (N, H, W) with 8 <= H, W <= 1024")
    return in_dims, out_dims


def onnx_file_record(proto, path: str | os.PathLike = "model") -> dict:
    """The model record of a loaded ONNX ``proto``: its ``ferlab`` entry, or the separate
    ``ferlab_*`` entries of a file written before the one layout; checked, not yet against the
    graph."""
    props = {p.key: p.value for p in proto.metadata_props}
    old = sorted(key for key in props if key in ONNX_KEYS)
    if RECORD_KEY not in props:
        return onnx_record(props, path)
    if old:
        raise ModelFileError(
            f"{path}: holds both a {RECORD_KEY} record and old-layout fields ({', '.join(old)})"
        )
    return decode_record(props[RECORD_KEY], path, "onnx")


def _check_against_graph(record: dict, proto, path) -> tuple[int, int]:
    """The record's class names and input shape against the graph's; the image shape (H, W)."""
    names = record["class_names"]
    if not (isinstance(names, list) and 2 <= len(names) <= 1000 and all(names)):
        raise ModelFileError(f"{path}: class_names must be a list of 2 to 1000 names")
    in_dims, out_dims = _graph_shapes(proto, path)
    if len(out_dims) != 2 or out_dims[1] != len(names):
        raise ModelFileError(
            f"{path}: output has {out_dims[1] if len(out_dims) == 2 else '?'} classes but "
            f"{len(names)} class names"
        )
    shape = (in_dims[1], in_dims[2])
    if record["input_shape"] is not None and tuple(record["input_shape"]) != shape:
        raise ModelFileError(
            f"{path}: input_shape {record['input_shape']} but the graph takes {list(shape)}"
        )
    return shape


def _memory_meta(record: dict, proto) -> dict:
    """An ONNX model's in-memory ``meta``: the record's name, version, training record,
    quantization and temperature where given, and the graph's parameter count."""
    meta = {"training_info": record["training"], "record": record}
    for field, key in (("name",) * 2, ("ferlab_version", "version"), ("quantization",) * 2):
        if record[field] is not None:
            meta[key] = record[field]
    if record["temperature"] is not None:
        meta["temperature"] = record["temperature"]
    meta["parameter_count"] = int(sum(np.prod(t.dims) for t in proto.graph.initializer))
    return meta


def require_onnx():
    """The ``onnx`` and ``onnxruntime`` modules, or a one-line error naming the install."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise FerlabError(
            "ONNX models need onnx and onnxruntime: pip install onnxruntime onnx"
        ) from None
    return onnx, onnxruntime


def read_proto(path: str | os.PathLike):
    """The ONNX ModelProto of ``path`` (bounded in size) and the file's bytes."""
    onnx, _ = require_onnx()
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    size = path.stat().st_size
    if size > MAX_ONNX_BYTES:
        raise ModelFileError(f"{path}: {size} bytes, more than the {MAX_ONNX_BYTES} accepted")
    data = path.read_bytes()
    try:
        return onnx.load_from_string(data), data
    except Exception as exc:  # protobuf raises its own DecodeError types
        raise ModelFileError(
            f"{path}: not a readable ONNX file ({exc.__class__.__name__})"
        ) from None


def load_onnx(path: str | os.PathLike, *, threads: int = 1) -> OnnxClassifier:
    """Load and check a ferlab ONNX file; every field is checked before a session is built."""
    _, onnxruntime = require_onnx()
    path = Path(path)
    if not isinstance(threads, int) or threads < 1:
        raise FerlabError(f"threads must be an integer >= 1, got {threads!r}")
    proto, data = read_proto(path)
    record = onnx_file_record(proto, path)
    shape = _check_against_graph(record, proto, path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = onnxruntime.InferenceSession(
            proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelFileError(f"{path}: ONNX Runtime cannot run it ({exc})") from None
    meta = _memory_meta(record, proto)
    return OnnxClassifier(session, record["class_names"], shape, meta, data)


def read_temperature(text: str, path: str | os.PathLike = "model") -> dict[str, float]:
    """The ``ferlab_temperature`` field of an old-layout file: JSON with a temperature for
    every TTA choice, checked."""
    value = parse_json(text, path, TEMPERATURE_KEY)
    return check_temperatures(value, path, TEMPERATURE_KEY)


def write_record(model, record: dict) -> None:
    """Store ``record`` in ONNX ``model``'s metadata under ``ferlab``, in place of any ferlab
    metadata of either layout (other producers' entries are kept)."""
    kept = [p for p in model.metadata_props if p.key != RECORD_KEY and p.key not in ONNX_KEYS]
    text = encode_record(record)
    del model.metadata_props[:]
    for entry in kept:
        model.metadata_props.add(key=entry.key, value=entry.value)
    model.metadata_props.add(key=RECORD_KEY, value=text)


def set_temperature(
    source: str | os.PathLike, target: str | os.PathLike, temperature: dict[str, float]
) -> Path:
    """Write a copy of a ferlab ONNX file with ``temperature`` (one per TTA choice) stored in
    its model record; the graph and every other field are left as they are (a file of the old
    layout is written in the one record layout)."""
    import onnx

    value = {mode: check_temperature(temperature[mode], mode) for mode in TTA_VIEWS}
    model = onnx.load(str(source))
    record = onnx_file_record(model, source)
    write_record(model, record | {"temperature": value})
    target = Path(target)
    with atomic_path(target) as tmp:
        onnx.save(model, str(tmp))
    return target


def quantize_onnx(
    source: str | os.PathLike, target: str | os.PathLike, calibration: np.ndarray
) -> Path:
    """Write an int8 copy of a ferlab ONNX file: static, per-channel, QDQ format.

    Activation ranges are calibrated on ``calibration``, uint8 images (N, H, W) that must come
    from the training data (never a test split). The metadata (class names, name, training
    information) is carried over in its model record, with ``quantization`` set.
    """
    import contextlib
    import io
    import tempfile

    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    images = np.asarray(calibration, dtype=np.float32)

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.start = 0

        def get_next(self):
            if self.start >= len(images):
                return None
            self.start += 64
            return {"pixels": images[self.start - 64 : self.start]}

    target = Path(target)
    source_model = onnx.load(str(source))
    source_record = onnx_file_record(source_model, source)
    with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(io.StringIO()):
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared))
        quantized = Path(folder) / "quantized.onnx"
        # The softmax stays in float: quantised, probabilities would come in steps of 1/255.
        # Weights use 7 bits (reduce_range): on x86 CPUs without VNNI (AVX2 only) ONNX Runtime's
        # uint8 x int8 products saturate with 8-bit weights, and the same file scored 0.6 points
        # lower on its check sample on such a machine than on one with VNNI.
        softmax = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Softmax"]
        quantize_static(
            str(prepared), str(quantized), Batches(), quant_format=QuantFormat.QDQ,
            per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, nodes_to_exclude=softmax,
        )  # fmt: skip
        model = onnx.load(str(quantized))
    del model.metadata_props[:]
    for entry in source_model.metadata_props:
        model.metadata_props.add(key=entry.key, value=entry.value)
    quantization = (
        f"int8 static, per-channel 7-bit weights, QDQ; calibrated on {len(images)} images"
    )
    write_record(model, source_record | {"quantization": quantization})
    with atomic_path(target) as tmp:
        onnx.save(model, str(tmp))
    return target
