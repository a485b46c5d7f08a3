"""The one atomic writer: every file ferlab writes appears whole or not at all.

A file is written to a temporary name in its own folder and renamed over its target
(``os.replace``, atomic on POSIX and Windows); on any failure, Ctrl-C included, the temporary
file is removed and the target keeps what it held. The lowest layer: it imports nothing of ferlab.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def file_mode() -> int:
    """The permissions a new file gets here (0o666 less the umask), as ``open`` would give it."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    return 0o644


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it becomes ``path`` when the block ends
    without error, and is removed when it raises.

    For writers that take a file name (safetensors, ONNX, images); the temporary file exists
    (empty) when the block starts, with the mode an ordinary new file gets. The target's parent
    folder is made when missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, file_mode())  # mkstemp makes 0600 files; outputs get the usual mode
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically; return the path."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def json_text(payload) -> str:
    """``payload`` as the indented JSON ferlab writes, ending in a newline."""
    return json.dumps(payload, indent=2) + "\n"


def write_json_atomic(path: str | os.PathLike, payload) -> Path:
    """Write ``payload`` as indented JSON to ``path`` atomically; a payload JSON cannot hold
    raises before anything is written."""
    return write_text_atomic(path, json_text(payload))
