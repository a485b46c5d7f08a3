"""Array files: one ``.npz`` of numeric arrays plus a JSON metadata entry, never a pickle.

The lowest layer of ferlab's files: model files (``ferlab.nn``), checkpoints and the decoded-data
cache (``ferlab.data``) are all written and read here.
"""

from __future__ import annotations

import json
import lzma
import os
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ferlab.common.files import atomic_path
from ferlab.errors import ModelFileError

META_KEY = "__meta__"
# The member that holds a file's JSON metadata: ``__meta__`` (checkpoints, data caches and model
# files written before the one model record) or ``ferlab`` (model files: ferlab.modelfile).
META_KEYS = (META_KEY, "ferlab")
MAX_ARRAY_BYTES = 4 * 1024**3  # all arrays of one file together, checked before reading any


def write_npz(
    path: str | os.PathLike,
    meta: dict | str,
    arrays: dict[str, np.ndarray],
    *,
    meta_key: str = META_KEY,
) -> Path:
    """Atomically write arrays and JSON metadata (a dict, or its JSON text) to ``path``, the
    metadata under ``meta_key`` (one of :data:`META_KEYS`); a crash never leaves half a file."""
    path = Path(path)
    if meta_key not in META_KEYS:
        raise ValueError(f"metadata key must be one of {META_KEYS}, got {meta_key!r}")
    text = meta if isinstance(meta, str) else json.dumps(meta)
    payload = {meta_key: np.frombuffer(text.encode("utf-8"), dtype=np.uint8)}
    for name, value in arrays.items():
        if name in META_KEYS:
            raise ValueError(f"array name {name!r} is reserved for the metadata")
        array = np.asarray(value)
        if array.dtype == object:
            raise TypeError(
                f"array {name!r} has dtype object; model files hold numeric arrays only"
            )
        payload[name] = array
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **payload)
    return path


def read_npz(
    path: str | os.PathLike, expected_format: str | None = None
) -> tuple[dict, dict[str, np.ndarray]]:
    """Read metadata and arrays written by :func:`write_npz`; refuse pickles and foreign files."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    try:
        declared = 0
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as listing:
                declared = sum(info.file_size for info in listing.infolist())
        if declared > MAX_ARRAY_BYTES:
            raise ModelFileError(
                f"{path}: declares {declared:,} bytes of arrays, more than the "
                f"{MAX_ARRAY_BYTES:,} accepted"
            )
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
    except (
        zipfile.BadZipFile,
        OSError,
        EOFError,
        KeyError,
        zlib.error,
        lzma.LZMAError,
        NotImplementedError,  # a damaged compression method, version or flag bits
        RuntimeError,  # a member flagged as encrypted
        UnicodeDecodeError,  # a damaged member name
        tokenize.TokenError,  # a damaged .npy header (NumPy tokenizes it)
        SyntaxError,
        OverflowError,
        MemoryError,  # a damaged .npy header declaring a huge shape
    ) as exc:
        raise ModelFileError(f"{path}: corrupt or truncated file ({exc})") from None
    keys = [key for key in META_KEYS if key in arrays]
    if not keys:
        raise ModelFileError(f"{path}: not a ferlab file (no metadata entry)")
    if len(keys) > 1:
        raise ModelFileError(f"{path}: two metadata entries ({' and '.join(keys)}); refused")
    entry = arrays.pop(keys[0])
    if entry.dtype != np.uint8 or entry.ndim != 1:
        raise ModelFileError(f"{path}: unreadable metadata (not a byte string)")
    try:
        meta = json.loads(entry.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelFileError(f"{path}: unreadable metadata ({str(exc)[:200]})") from None
    if not isinstance(meta, dict) or (expected_format and meta.get("format") != expected_format):
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ModelFileError(f"{path}: expected a {expected_format} file, found {found!r}")
    return meta, arrays
