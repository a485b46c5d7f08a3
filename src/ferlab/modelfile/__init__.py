"""The one record of a model: the metadata layout every model file carries, its checks, and
readers for the layouts written before it (see :mod:`ferlab.modelfile.record`)."""

from ferlab.modelfile.legacy import (
    TEMPERATURE_KEY,
    cnn_record,
    fully_connected_record,
    is_current,
    onnx_record,
)
from ferlab.modelfile.record import (
    FORMAT_VERSION,
    FORMATS,
    RECORD_KEY,
    check_record,
    decode_record,
    encode_record,
    new_record,
    parse_json,
)

__all__ = [
    "FORMATS",
    "FORMAT_VERSION",
    "RECORD_KEY",
    "TEMPERATURE_KEY",
    "check_record",
    "cnn_record",
    "decode_record",
    "encode_record",
    "fully_connected_record",
    "is_current",
    "new_record",
    "onnx_record",
    "parse_json",
]
