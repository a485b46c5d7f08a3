"""Cache of decoded data sets, keyed by the source's path, size and modification time."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from ferlab import __version__
from ferlab.data.images import LabeledImages
from ferlab.errors import ModelFileError

CACHE_FORMAT = "ferlab-data-cache"


def cache_dir() -> Path:
    """``$FERLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/ferlab``, else ``~/.cache/ferlab``."""
    if os.environ.get("FERLAB_CACHE_DIR"):
        return Path(os.environ["FERLAB_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ferlab"


def source_fingerprint(path: Path) -> dict:
    """What identifies a source: resolved path, and size and mtime of every file under it."""
    path = path.resolve()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stats = [(str(p.relative_to(path) if p != path else p.name), p.stat()) for p in files]
    return {
        "path": str(path),
        "size": sum(s.st_size for _, s in stats),
        "mtime_ns": max((s.st_mtime_ns for _, s in stats), default=0),
        "files": len(stats),
    }


def cache_path(kind: str, path: Path, options: dict) -> Path:
    """Where the decoded arrays of this source are cached."""
    key = json.dumps(
        {"kind": kind, "source": source_fingerprint(path), "options": options, "v": __version__},
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return cache_dir() / f"{kind}-{digest}.npz"


def cached(
    kind: str, path: Path, options: dict, load: Callable[[], LabeledImages], use_cache: bool
) -> LabeledImages:
    """Return the cached data set for this source, or load, cache and return it."""
    from ferlab.arrays import read_npz, write_npz

    if not use_cache:
        return load()
    target = cache_path(kind, path, options)
    if target.is_file():
        try:
            meta, arrays = read_npz(target, expected_format=CACHE_FORMAT)
            return LabeledImages(
                arrays["images"],
                arrays["labels"],
                meta["class_names"],
                arrays["splits"],
                arrays.get("names"),
                meta.get("skipped", []),
            )
        except (ModelFileError, KeyError):
            target.unlink(missing_ok=True)
    data = load()
    meta = {"format": CACHE_FORMAT, "class_names": data.class_names, "skipped": data.skipped}
    arrays = {"images": data.images, "labels": data.labels, "splits": data.splits}
    if data.names is not None:
        arrays["names"] = data.names
    with contextlib.suppress(OSError):  # a read-only or full cache must not stop the load
        write_npz(target, meta, arrays)
    return data
