"""The driver of ``ferlab analyse``: inputs in, tasks out to workers, rows into atomic chunks.

The driver walks the inputs lazily, skips those the output already holds with the same content
(:mod:`ferlab.collection.ledger`), groups photos into tasks of ``batch`` and splits long videos into
time ranges of ``segment_seconds``, and keeps at most two tasks per worker in flight, so that its
memory holds the record of what is done and little else. Results are buffered and written as a
chunk every ``chunk_seconds`` (or ``chunk_rows`` rows); an input counts as done only once its
chunk is in place, so after any interruption the output holds each input's rows exactly once.

Workers are this process (:class:`InlinePool`), a pool of processes each loading the model once
(:class:`ProcessPool`), or a Dask cluster (:class:`DaskPool`: local, at a scheduler address, or
batch jobs through :func:`ferlab.search.cluster.open_client`). A task whose worker is lost is
sent again up to ``retries`` times; then its inputs are left for the next run and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ferlab.collection.ledger import CHANGED, DONE, Identity, Ledger, sha256_of
from ferlab.collection.report import (
    PLAIN_PROGRESS_S,
    Progress,
    Summary,
    save_timeline,
    timeline_path,
)
from ferlab.collection.store import (
    MANIFEST,
    SCHEMA_VERSION,
    ChunkStore,
    read_manifest,
)
from ferlab.collection.walk import Input, Skip
from ferlab.collection.work import PhotoTask, RangeTask, Settings, face_rows, run_task, video_length
from ferlab.common.files import write_json_atomic
from ferlab.errors import FerlabError


@dataclass
class Options:
    """How the driver works; none of these change the results."""

    fmt: str = "parquet"
    hash: bool = False
    batch: int = 16
    segment_seconds: float = 60.0
    chunk_seconds: float = 30.0
    chunk_rows: int = 10_000
    retries: int = 3
    timelines: bool = True
    progress: bool = True
    progress_every: float = PLAIN_PROGRESS_S

    def check(self) -> None:
        """Raise a one-line :class:`FerlabError` for a value out of range."""
        for name, value, low in (("--batch", self.batch, 1), ("--chunk-rows", self.chunk_rows, 1),
                                 ("--retries", self.retries, 0)):  # fmt: skip
            if value < low:
                raise FerlabError(f"{name} must be >= {low}, got {value}")
        if not self.segment_seconds > 0:
            raise FerlabError(f"--segment must be > 0 seconds, got {self.segment_seconds}")
        if not self.chunk_seconds >= 0:
            raise FerlabError(f"--chunk-seconds must be >= 0, got {self.chunk_seconds}")


# Pools of workers. Each has ``slots`` (tasks it runs at once), ``submit(fn, *args)``,
# ``wait_first(futures, timeout)`` and ``close()``; a future's ``result()`` raises when its worker
# was lost.


@dataclass
class _Video:
    """A video whose ranges are being analysed: each part's frames once it is back."""

    name: str
    identity: Identity
    parts: int
    frames: dict[int, object] = field(default_factory=dict)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold ``folder/.lock`` for this run: a second driver on the same output is refused."""
    with open(folder / ".lock", "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise FerlabError(f"{folder}: another ferlab analyse is writing into it") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_manifest(folder: Path, record: dict) -> None:
    """Write the run's settings into a new output, or refuse to resume one made with others."""
    old = read_manifest(folder)
    if old is None:
        write_json_atomic(folder / MANIFEST, record)
        return
    if old.get("schema_version") != SCHEMA_VERSION:
        raise FerlabError(f"{folder}: made by another version of ferlab analyse (schema "
                          f"{old.get('schema_version')}, this one writes {SCHEMA_VERSION})")  # fmt: skip
    differ = [k for k in record if old.get(k) != record[k]]
    if differ:
        shown = "; ".join(f"{k} {old.get(k)!r} there, {record[k]!r} now" for k in differ)
        raise FerlabError(f"{folder} holds an analysis made with other settings ({shown}); "
                          "give the same options to continue it, or another --out")  # fmt: skip


def load_ledger(store: ChunkStore) -> Ledger:
    """The record of what is done, read from the complete chunks in order; an input found in
    two chunks (a run stopped while replacing a changed input's rows) keeps the later one's,
    and the earlier chunk is rewritten without them."""
    ledger, stale = Ledger(), {}
    columns = ("file", "file_size", "file_mtime_ns", "file_sha256")
    for seq, path in store.chunks():
        rows = store.read_or_set_aside(seq, path, only=columns)
        for row in rows or ():
            name = row["file"]
            before = ledger.chunk_of(name)
            if before is not None and before != seq:
                stale.setdefault(before, set()).add(name)
            identity = Identity(row["file_size"], row["file_mtime_ns"], row["file_sha256"])
            ledger.record(name, identity, seq)
    for seq, names in stale.items():
        store.without(seq, names)
    return ledger


def _tracker(settings: Settings):
    from ferlab.vision.track import FaceTracker

    return FaceTracker(half_life=settings.smooth, min_confidence=settings.min_confidence)


def join_video(frames: list, settings: Settings, class_names: list[str]) -> list[dict]:
    """A video's rows from its ranges' ``(frame, time, faces)`` in time order: one tracker runs
    over all of them, so tracks and their smoothing go on across the ranges' boundaries as in
    one pass."""
    tracker, rows = _tracker(settings), []
    for index, stamp, faces in frames:
        tracked = tracker.update(faces, stamp)
        found = face_rows([f for _, f in tracked], class_names)
        for row, (track, _) in zip(found, tracked, strict=False):
            row["track"] = track
        for row in found:
            row["frame"], row["time"] = index, stamp
        rows += found
    return rows


def analyse_collection(
    items: Iterable[Input | Skip],
    out: str | Path,
    settings: Settings,
    pool,
    *,
    class_names: list[str],
    options: Options | None = None,
    task_fn: Callable = run_task,
    total: Callable[[], int | None] | None = None,
    stream: TextIO | None = None,
    stop_after_chunks: int | None = None,
) -> Summary:
    """Analyse every input of ``items`` not yet in the output folder ``out``; return the summary.

    ``task_fn(task, settings)`` does the work (:func:`ferlab.collection.work.run_task`; a stand-in
    measures the driver alone); ``total()`` gives the number of inputs once known, for the time
    left. ``stop_after_chunks`` stops the run after writing that many chunks (tests).
    """
    options = options or Options()
    options.check()
    out = Path(out)
    stream = stream or sys.stderr
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out):
        check_manifest(out, {"schema_version": SCHEMA_VERSION, "format": options.fmt,
                             "hash": options.hash, "class_names": list(class_names),
                             "settings": settings.recorded()})  # fmt: skip
        store = ChunkStore(out, options.fmt, class_names)
        store.remove_temporary()
        ledger = load_ledger(store)
        run = _Run(store, ledger, settings, pool, class_names, options, task_fn)
        run.progress = Progress(stream, enabled=options.progress, every=options.progress_every,
                                total=total)  # fmt: skip
        run.stop_after_chunks = stop_after_chunks
        try:
            run.go(items)
        finally:
            run.flush()
            run.summary.seconds = time.monotonic() - run.started
            run.summary.driver_cpu_seconds = time.process_time() - run.cpu_started
            run.progress.tick(run.summary, final=True)
        write_json_atomic(out / "summary.json", run.summary.to_dict())
    return run.summary


class _Run:
    """One run of the driver (see :func:`analyse_collection`)."""

    def __init__(self, store, ledger, settings, pool, class_names, options, task_fn) -> None:
        self.store, self.ledger, self.settings, self.pool = store, ledger, settings, pool
        self.class_names, self.options, self.task_fn = class_names, options, task_fn
        self.summary = Summary()
        self.busy: dict[str, Identity] = {}  # in flight or buffered, not yet in a chunk
        self.superseded: dict[str, int] = {}  # changed inputs: the chunk holding their old rows
        self.videos: dict[str, _Video] = {}
        self.rows: list[dict] = []
        self.names: list[str] = []
        self.flushed_at = self.started = time.monotonic()
        self.cpu_started = time.process_time()
        self.stop_after_chunks: int | None = None

    def go(self, items: Iterable[Input | Skip]) -> None:
        tasks = self._tasks(iter(items))
        inflight: dict = {}  # future -> (task, attempts)
        waiting: deque = deque()  # tasks to send again
        exhausted = False
        while True:
            while len(inflight) < 2 * self.pool.slots and not (exhausted and not waiting):
                if waiting:
                    task, attempts = waiting.popleft()
                else:
                    task = next(tasks, None)
                    if task is None:
                        exhausted = True
                        continue
                    attempts = 0
                inflight[self.pool.submit(self.task_fn, task, self.settings)] = (task, attempts)
            if not inflight:
                break
            for future in self.pool.wait_first(inflight, timeout=0.2):
                task, attempts = inflight.pop(future)
                try:
                    result = future.result()
                except (Exception, asyncio.CancelledError) as exc:  # the worker was lost: again
                    if attempts < self.options.retries:
                        waiting.append((task, attempts + 1))
                    else:
                        self._give_up(task, exc)
                    continue
                self._take(task, result)
            if self._due():
                self.flush()
                if self.stop_after_chunks and self.summary.chunks >= self.stop_after_chunks:
                    return
            self.progress.tick(self.summary)

    def _tasks(self, items: Iterator[Input | Skip]) -> Iterator[PhotoTask | RangeTask]:
        """The tasks of the inputs not yet done, made as the walk goes."""
        batch: list[tuple[str, str]] = []
        for item in items:
            if isinstance(item, Skip):
                self.summary.skip(item.name, item.reason)
                continue
            self.summary.found += 1
            if item.name in self.busy:
                self.summary.skip(item.name, "named twice")
                continue
            try:
                sha = sha256_of(item.path) if self.options.hash else None
            except OSError as exc:
                self.summary.skip(item.name, f"cannot be read ({exc.strerror})")
                continue
            identity = Identity(item.size, item.mtime_ns, sha)
            state = self.ledger.status(item.name, identity)
            if state == DONE:
                self.summary.already_done += 1
                continue
            if state == CHANGED:
                self.superseded[item.name] = self.ledger.chunk_of(item.name)
                self.summary.redone += 1
                self.summary.already_done += 1
            self.busy[item.name] = identity
            if item.is_video:
                yield from self._ranges(item, identity)
                continue
            batch.append((item.path, item.name))
            if len(batch) >= self.options.batch:
                yield PhotoTask(tuple(batch))
                batch = []
        if batch:
            yield PhotoTask(tuple(batch))

    def _ranges(self, item: Input, identity: Identity) -> Iterator[RangeTask]:
        try:
            frames, fps = video_length(item.path)
        except FerlabError as exc:
            self._unreadable(item.name, "video", str(exc))
            return
        every = self.settings.every
        step = max(every, int(self.options.segment_seconds * fps) // every * every)
        starts = list(range(0, frames, step)) if frames else [0]
        self.videos[item.name] = _Video(item.name, identity, len(starts))
        for part, start in enumerate(starts):
            stop = -1 if part == len(starts) - 1 else start + step  # the last reads to the end
            yield RangeTask(item.path, item.name, start, stop, part)

    def _take(self, task, result) -> None:
        if isinstance(task, RangeTask):
            part, frames = result
            video = self.videos.get(task.name)
            if video is None:  # an earlier range already found it unreadable
                return
            if isinstance(frames, str):
                del self.videos[task.name]
                self._unreadable(task.name, "video", frames)
                return
            video.frames[part] = frames
            if len(video.frames) == video.parts:
                self._finish_video(self.videos.pop(task.name))
            return
        for name, rows in result:
            if isinstance(rows, str):
                self._unreadable(name, "photo", rows)
            else:
                self._add(name, "photo", rows)

    def _finish_video(self, video: _Video) -> None:
        frames = [f for part in range(video.parts) for f in video.frames[part]]
        rows = join_video(frames, self.settings, self.class_names)
        self.summary.videos += 1
        self.summary.frames += len(frames)
        self._add(video.name, "video", rows)
        if self.options.timelines and rows:
            path = timeline_path(self.store.folder.parent, video.name)
            try:
                if save_timeline(rows, self.class_names, path, video.name):
                    self.summary.timelines.append(str(path.relative_to(self.store.folder.parent)))
            except ImportError:
                warnings.warn("timelines need matplotlib (ferlab[lab]); none written", stacklevel=2)
                self.options.timelines = False

    def _unreadable(self, name: str, kind: str, message: str) -> None:
        self.summary.skip(name, "unreadable")
        self._add(name, kind, [{"status": "unreadable", "note": message, "emotion": ""}])

    def _add(self, name: str, kind: str, rows: list[dict]) -> None:
        identity = self.busy[name]
        for row in rows:
            row["file"], row["file_size"] = name, identity.size
            row["file_mtime_ns"], row["file_sha256"], row["kind"] = (
                identity.mtime_ns, identity.sha256, kind)  # fmt: skip
            if row["status"] == "face":
                self.summary.faces += 1
                self.summary.emotions[row["emotion"]] += 1
        self.rows += rows
        self.names.append(name)
        self.summary.analysed += 1

    def _give_up(self, task, exc: Exception) -> None:
        """A task lost ``retries + 1`` times: its inputs are left for the next run."""
        names = [task.name] if isinstance(task, RangeTask) else [n for _, n in task.items]
        if isinstance(task, RangeTask) and self.videos.pop(task.name, None) is None:
            return  # another range of it was given up already
        for name in names:
            self.busy.pop(name, None)
            self.superseded.pop(name, None)
            self.summary.left += 1
            self.summary.skip(name, f"worker lost ({type(exc).__name__})")

    def _due(self) -> bool:
        if not self.names:
            return False
        return (len(self.rows) >= self.options.chunk_rows
                or time.monotonic() - self.flushed_at >= self.options.chunk_seconds)  # fmt: skip

    def flush(self) -> None:
        """Write the buffered inputs' rows as one chunk, then record them as done."""
        self.flushed_at = time.monotonic()
        if not self.names:
            return
        seq = self.store.write(self.rows)
        self.summary.chunks += 1
        old: dict[int, set[str]] = {}
        for name in self.names:
            self.ledger.record(name, self.busy.pop(name), seq)
            before = self.superseded.pop(name, None)
            if before is not None:
                old.setdefault(before, set()).add(name)
        for chunk, names in old.items():  # the changed inputs' old rows, now superseded
            self.store.without(chunk, names)
        self.rows, self.names = [], []


def count_in_background(count: Callable[[], int]) -> Callable[[], int | None]:
    """Run ``count()`` in a daemon thread; return a function giving its result once known."""
    import threading

    result: list[int] = []
    threading.Thread(target=lambda: result.append(count()), daemon=True).start()
    return lambda: result[0] if result else None


def default_workers() -> int:
    """The processes ``--workers auto`` starts: one per core."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
