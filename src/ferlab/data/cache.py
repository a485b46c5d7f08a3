"""Cache of decoded data sets, keyed by the source's path and every file's name and stat data.

Each cache file holds a SHA-256 of its metadata and arrays, checked on every load: a damaged
cache file is rebuilt from the source, with a warning. A source with a ``SHA256SUMS`` beside it
is verified once, when its cache file is built; the checksum it was verified against is part of
the key, so later loads neither hash the source again nor miss a changed ``SHA256SUMS``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

from ferlab import __version__
from ferlab.data.images import LabeledImages
from ferlab.data.integrity import arrays_digest, expected_sha256, one_line, verify_sha256
from ferlab.errors import ModelFileError

CACHE_FORMAT = "ferlab-data-cache"
CACHE_LAYOUT = 2  # 2: the file holds a SHA-256 of its contents (meta["sha256"])


def cache_dir() -> Path:
    """``$FERLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/ferlab``, else ``~/.cache/ferlab``."""
    if os.environ.get("FERLAB_CACHE_DIR"):
        return Path(os.environ["FERLAB_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ferlab"


def source_fingerprint(path: Path) -> dict:
    """What identifies a source, as Git's index tells a changed file: the resolved path and, for
    every file under it, its relative path, size, inode and modification and change times.

    Moving a file between class folders, adding, removing or rewriting one changes it.
    """
    path = path.resolve()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        info = file.stat()
        rel = file.name if file == path else file.relative_to(path).as_posix()
        entry = (rel, info.st_size, info.st_ino, info.st_mtime_ns, info.st_ctime_ns)
        digest.update(json.dumps(entry).encode() + b"\n")
    return {"path": str(path), "files": len(files), "stat_digest": digest.hexdigest()}


def cache_path(kind: str, path: Path, options: dict) -> Path:
    """Where the decoded arrays of this source are cached."""
    key = json.dumps(
        {
            "kind": kind,
            "source": source_fingerprint(path),
            "options": options,
            "v": __version__,
            "layout": CACHE_LAYOUT,
            "published_sha256": expected_sha256(path),
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return cache_dir() / f"{kind}-{digest}.npz"


def cached(
    kind: str, path: Path, options: dict, load: Callable[[], LabeledImages], use_cache: bool
) -> LabeledImages:
    """Return the cached data set for this source, or load, cache and return it.

    A source with a checksum in a ``SHA256SUMS`` beside it is verified before it is loaded
    (DataError naming it on a mismatch), with or without the cache.
    """
    from ferlab.common.arrays import read_npz, write_npz

    if not use_cache:
        verify_sha256(path)
        return load()
    target = cache_path(kind, path, options)
    if target.is_file():
        try:
            return _read_cache(target, read_npz)
        except (ModelFileError, KeyError, ValueError, TypeError) as exc:
            warnings.warn(
                f"{target}: damaged data cache ({one_line(exc)}); rebuilt from {path}",
                stacklevel=3,
            )
            target.unlink(missing_ok=True)
    verified = verify_sha256(path)
    data = load()
    meta = {
        "format": CACHE_FORMAT,
        "class_names": data.class_names,
        "skipped": data.skipped,
        "verified": verified,
    }
    arrays = {"images": data.images, "labels": data.labels, "splits": data.splits}
    if data.names is not None:
        arrays["names"] = data.names
    meta["sha256"] = arrays_digest(meta, arrays)
    with contextlib.suppress(OSError):  # a read-only or full cache must not stop the load
        write_npz(target, meta, arrays)
    return data


def _read_cache(target: Path, read_npz) -> LabeledImages:
    """The data set in a cache file whose SHA-256 matches its contents; else ValueError."""
    meta, arrays = read_npz(target, expected_format=CACHE_FORMAT)
    stored = meta.pop("sha256", None)
    if stored is None:
        raise ValueError("no checksum")
    if arrays_digest(meta, arrays) != stored:
        raise ValueError("its contents do not match their SHA-256")
    return LabeledImages(
        arrays["images"],
        arrays["labels"],
        meta["class_names"],
        arrays["splits"],
        arrays.get("names"),
        meta.get("skipped", []),
    )
