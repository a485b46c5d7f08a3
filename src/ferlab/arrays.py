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

from ferlab.errors import ModelFileError
from ferlab.files import atomic_path

META_KEY = "__meta__"
MAX_ARRAY_BYTES = 4 * 1024**3  # all arrays of one file together, checked before reading any


def write_npz(path: str | os.PathLike, meta: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Atomically write arrays and JSON metadata to ``path`` (a crash never leaves half a file)."""
    path = Path(path)
    payload = {META_KEY: np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)}
    for name, value in arrays.items():
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
