"""The output of ``ferlab analyse``: its schema, and its chunks, each written whole or not at all.

The output folder holds ``analysis.json`` (the settings, checked on resume), ``chunks/`` with
``part-NNNNNN.parquet`` (or ``.csv``, ``.jsonl``) files, and at the end ``summary.json`` and
``timelines/``. A chunk is written to a hidden temporary file in ``chunks/`` and renamed into
place (``os.replace``), so a killed run leaves only complete chunks and temporary files, which
the next run removes unread. A chunk that cannot be read whole all the same (cut short by a copy,
a full disk) is renamed ``*.torn``, never read as data, and its inputs are analysed again.

The columns (``SCHEMA_VERSION`` 1; ``docs/collection.md`` describes each) are
:data:`IDENTITY_COLUMNS`, :data:`ROW_COLUMNS`, then ``prob_<class>`` for each class of the model,
in the model's order.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from ferlab.common.files import atomic_path
from ferlab.errors import FerlabError
from ferlab.vision.detection import LANDMARKS

SCHEMA_VERSION = 1
FORMATS = ("parquet", "csv", "jsonl")
CHUNK_DIR = "chunks"
CHUNK_NAME = re.compile(r"part-(\d{6,})\.(parquet|csv|jsonl)")
# (name, Arrow type): what identifies the input each row comes from; the record of what is done.
IDENTITY_COLUMNS = (
    ("file", "string"),
    ("file_size", "int64"),
    ("file_mtime_ns", "int64"),
    ("file_sha256", "string"),
)
# What each row says: one row per face, or one per input (or video frame) without a face.
ROW_COLUMNS = (
    ("kind", "string"),  # photo | video
    ("status", "string"),  # face | no_face | unreadable
    ("note", "string"),
    ("frame", "int64"),
    ("time", "double"),
    ("face", "int32"),
    ("track", "int32"),
    ("x", "int32"),
    ("y", "int32"),
    ("w", "int32"),
    ("h", "int32"),
    ("score", "double"),
    *((f"{name}_{axis}", "double") for name in LANDMARKS for axis in "xy"),
    ("emotion", "string"),
    ("probability", "double"),
)
INT_TYPES = ("int32", "int64")


def columns(class_names: list[str]) -> list[tuple[str, str]]:
    """Every column in order, with its Arrow type name."""
    return [*IDENTITY_COLUMNS, *ROW_COLUMNS, *((f"prob_{c}", "double") for c in class_names)]


def arrow_schema(class_names: list[str]):
    """The output's ``pyarrow.Schema``, with the schema version and class names as metadata."""
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "int32": pa.int32(),
        "int64": pa.int64(),
        "double": pa.float64(),
    }
    meta = {"ferlab.schema_version": str(SCHEMA_VERSION), "ferlab.classes": json.dumps(class_names)}
    return pa.schema([(n, types[t]) for n, t in columns(class_names)], metadata=meta)


class ChunkStore:
    """The chunks of one output folder in one format (``parquet``, ``csv`` or ``jsonl``)."""

    def __init__(self, folder: str | Path, fmt: str, class_names: list[str]) -> None:
        if fmt not in FORMATS:
            raise FerlabError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.folder = Path(folder) / CHUNK_DIR
        self.fmt = fmt
        self.class_names = list(class_names)
        self.columns = columns(self.class_names)
        self.names = [n for n, _ in self.columns]
        self.folder.mkdir(parents=True, exist_ok=True)
        self.next_seq = 1 + max((seq for seq, _ in self.chunks()), default=0)

    def chunks(self) -> list[tuple[int, Path]]:
        """The complete chunks (number, path), in order; temporary and torn files left out."""
        found = []
        for path in self.folder.iterdir():
            match = CHUNK_NAME.fullmatch(path.name)
            if match and match.group(2) == self.fmt:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def remove_temporary(self) -> int:
        """Delete what a killed writer left (hidden ``*.tmp`` files); return how many."""
        removed = 0
        for path in self.folder.glob(".part-*.tmp"):
            path.unlink(missing_ok=True)
            removed += 1
        return removed

    def path_of(self, seq: int) -> Path:
        return self.folder / f"part-{seq:06d}.{self.fmt}"

    def write(self, rows: list[dict]) -> int:
        """Write ``rows`` (dicts by column name; missing ones are null) as the next chunk,
        atomically; return its number."""
        seq = self.next_seq
        self._write_at(seq, rows)
        self.next_seq += 1
        return seq

    def _write_at(self, seq: int, rows: list[dict]) -> None:
        with atomic_path(self.path_of(seq)) as tmp, open(tmp, "wb") as stream:
            self._encode(rows, stream)
            stream.flush()
            os.fsync(stream.fileno())  # a chunk on disk is a promise: the inputs are done

    def _encode(self, rows: list[dict], stream) -> None:
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pylist(rows, schema=arrow_schema(self.class_names))
            pq.write_table(table, stream, compression="zstd")
        elif self.fmt == "csv":
            text = io.StringIO(newline="")
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(self.names)
            for row in rows:
                writer.writerow(["" if row.get(n) is None else row[n] for n in self.names])
            stream.write(text.getvalue().encode("utf-8"))
        else:
            lines = (json.dumps({n: row.get(n) for n in self.names}) + "\n" for row in rows)
            stream.write("".join(lines).encode("utf-8"))

    def read(self, seq: int, path: Path | None = None, *, only: Iterable[str] | None = None):
        """The rows of chunk ``seq`` as a list of dicts (``only``: these columns), or raise
        ``ValueError`` when the file is not a whole chunk of this schema."""
        path = path or self.path_of(seq)
        wanted = list(only) if only is not None else self.names
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            try:
                table = pq.ParquetFile(path).read(columns=wanted)
            except Exception as exc:  # ArrowInvalid, OSError...: not a whole Parquet file
                raise ValueError(str(exc).splitlines()[0]) from None
            return table.to_pylist()
        raw = path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            raise ValueError("the last line is cut short")
        text = raw.decode("utf-8", errors="strict")
        types = dict(self.columns)
        if self.fmt == "csv":
            reader = csv.reader(io.StringIO(text, newline=""))
            header = next(reader, None)
            if header != self.names:
                raise ValueError("its header is not this analysis's columns")
            rows = []
            for line in reader:
                if len(line) != len(self.names):
                    raise ValueError(f"a row has {len(line)} fields, not {len(self.names)}")
                rows.append({n: _parse(line[i], types[n]) for i, n in enumerate(self.names)})
        else:
            rows = []
            for line in text.splitlines():
                record = json.loads(line)  # JSONDecodeError is a ValueError
                if not isinstance(record, dict) or list(record) != self.names:
                    raise ValueError("a line is not a row of this analysis")
                rows.append(record)
        return [{n: r[n] for n in wanted} for r in rows]

    def read_or_set_aside(self, seq: int, path: Path, *, only: Iterable[str] | None = None):
        """The chunk's rows, or None after renaming a chunk that cannot be read to ``*.torn``."""
        try:
            return self.read(seq, path, only=only)
        except (ValueError, UnicodeDecodeError) as exc:
            torn = path.with_name(path.name + ".torn")
            os.replace(path, torn)
            warnings.warn(
                f"{path}: not a whole chunk ({exc}); set aside as {torn.name}, its inputs are "
                "analysed again",
                stacklevel=2,
            )
            return None

    def without(self, seq: int, names: set[str]) -> None:
        """Rewrite chunk ``seq`` without the rows of the inputs ``names`` (superseded by a later
        chunk), atomically; a chunk left empty is removed."""
        path = self.path_of(seq)
        if not path.exists():
            return
        rows = self.read(seq)
        kept = [r for r in rows if r["file"] not in names]
        if len(kept) == len(rows):
            return
        if kept:
            self._write_at(seq, kept)
        else:
            path.unlink()


def _parse(text: str, kind: str):
    if text == "":
        return None
    if kind in INT_TYPES:
        return int(text)
    if kind == "double":
        return float(text)
    return text


def read_rows(folder: str | Path) -> Iterator[dict]:
    """Every row of an analysis's output folder, in chunk order, each input's rows once: where a
    run was stopped while replacing a changed input's rows, the latest chunk's are given."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        raise FerlabError(f"{folder}: not the output of ferlab analyse (no analysis.json)")
    store = ChunkStore(folder, manifest["format"], manifest["class_names"])
    chunks = store.chunks()
    latest: dict[str, int] = {}
    for seq, path in chunks:
        with contextlib.suppress(ValueError):
            for row in store.read(seq, path, only=["file"]):
                latest[row["file"]] = seq
    for seq, path in chunks:
        try:
            rows = store.read(seq, path)
        except ValueError:
            continue
        yield from (row for row in rows if latest.get(row["file"]) == seq)


MANIFEST = "analysis.json"


def read_manifest(folder: str | Path) -> dict | None:
    """The settings an output folder was started with, or None when it has none."""
    path = Path(folder) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise FerlabError(f"{path}: cannot be read ({exc})") from None
