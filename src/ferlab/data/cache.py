"""Cache of decoded data sets, keyed by the source's path and every file's name and stat data."""

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
