"""The inputs of a collection, found one at a time: never listed whole in memory.

A source is a folder (walked depth first, each folder's entries in name order; hidden files and
folders left out), an image or video file, or a glob pattern (``photos/**/*.jpg``, in the order
the file system gives). A list file gives one path per line (blank lines and ``#`` comments left
out). What is not an image or video, not a regular file, or does not exist is yielded as a
:class:`Skip` with the reason, so that the summary can count it.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ferlab.data.images import IMAGE_SUFFIXES
from ferlab.errors import DataError
from ferlab.vision.video import VIDEO_SUFFIXES

MEDIA_SUFFIXES = frozenset(IMAGE_SUFFIXES + VIDEO_SUFFIXES)
GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class Input:
    """One image or video: ``path`` it is read from, the ``name`` its rows give (the source as
    given joined with the path inside it), its ``size`` in bytes and ``mtime_ns``."""

    path: str
    name: str
    size: int
    mtime_ns: int

    @property
    def is_video(self) -> bool:
        """Whether the file's suffix names a video."""
        return os.path.splitext(self.name)[1].lower() in VIDEO_SUFFIXES


@dataclass(frozen=True, slots=True)
class Skip:
    """A path that is not analysed: its ``name`` and the ``reason``."""

    name: str
    reason: str


def _entry(path: str, name: str) -> Input | Skip:
    """The input at ``path`` (or why it is skipped), statted once."""
    if os.path.splitext(name)[1].lower() not in MEDIA_SUFFIXES:
        return Skip(name, "not an image or video")
    try:
        info = os.stat(path)
    except OSError:
        return Skip(name, "no such file")
    if not stat.S_ISREG(info.st_mode):
        return Skip(name, "not a regular file")
    return Input(path, name, info.st_size, info.st_mtime_ns)


def walk_folder(folder: str, name: str) -> Iterator[Input | Skip]:
    """Every file under ``folder`` (depth first, names in order, hidden ones left out), named
    ``name`` joined with its path inside the folder."""
    stack = [(folder, name)]
    while stack:
        here, label = stack.pop()
        try:
            with os.scandir(here) as listing:
                entries = sorted(
                    (e for e in listing if not e.name.startswith(".")), key=lambda e: e.name
                )
        except OSError as exc:
            yield Skip(label, f"cannot list the folder ({exc.strerror})")
            continue
        folders = []
        for entry in entries:
            child = f"{label.rstrip('/')}/{entry.name}" if label else entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                folders.append((entry.path, child))
            else:
                yield _entry(entry.path, child)
        stack.extend(reversed(folders))  # the first sub-folder is walked first


def list_file_lines(path: str | Path) -> Iterator[str]:
    """The paths of a list file, one per line, read lazily (``-``: standard input)."""
    import sys

    if str(path) == "-":
        stream = sys.stdin
    else:
        try:
            stream = open(path, encoding="utf-8")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise DataError(f"--list {path}: cannot read it ({exc.strerror})") from None
    try:
        for line in stream:
            line = line.strip()
            if line and not line.startswith("#"):
                yield line
    finally:
        if stream is not sys.stdin:
            stream.close()


def iter_inputs(
    sources: Iterable[str | Path], *, list_file: str | Path | None = None
) -> Iterator[Input | Skip]:
    """Each source's inputs (or skips), then the list file's, one at a time."""
    for raw in sources:
        yield from _source(str(raw))
    if list_file is not None:
        for line in list_file_lines(list_file):
            yield from _source(line)


def _source(raw: str) -> Iterator[Input | Skip]:
    path = os.path.expanduser(raw)
    if os.path.isdir(path):
        yield from walk_folder(path, raw.rstrip("/") or "/")
    elif os.path.lexists(path):
        yield _entry(path, raw)
    elif GLOB_CHARS & set(raw):
        matched = False
        for hit in glob.iglob(path, recursive=True):
            matched = True
            yield from (walk_folder(hit, hit) if os.path.isdir(hit) else [_entry(hit, hit)])
        if not matched:
            yield Skip(raw, "the pattern matches nothing")
    else:
        yield Skip(raw, "no such file or folder")


def count_inputs(sources: Iterable[str | Path], *, list_file: str | Path | None = None) -> int:
    """How many inputs the sources hold (a second, counting walk for the time left)."""
    return sum(isinstance(item, Input) for item in iter_inputs(sources, list_file=list_file))
