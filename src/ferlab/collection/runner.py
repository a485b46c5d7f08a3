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
import concurrent.futures
import contextlib
import fcntl
import inspect
import multiprocessing
import os
import sys
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ferlab.collection.ledger import CHANGED, DONE, Identity, Ledger, sha256_of
from ferlab.collection.store import (
    MANIFEST,
    SCHEMA_VERSION,
    ChunkStore,
    read_manifest,
    write_json,
)
from ferlab.collection.walk import Input, Skip
from ferlab.collection.work import PhotoTask, RangeTask, Settings, face_rows, run_task, video_length
from ferlab.errors import FerlabError

PLAIN_PROGRESS_S = 30.0  # a plain progress line this often when stderr is not a terminal
TTY_PROGRESS_S = 0.25
EXAMPLES = 3  # names given per skip reason in the summary


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


@dataclass
class Summary:
    """What a run did: inputs found, analysed now, already done, redone because they changed,
    skipped (by reason, with examples), left for the next run, faces and emotions."""

    found: int = 0
    analysed: int = 0
    already_done: int = 0
    redone: int = 0
    left: int = 0
    faces: int = 0
    frames: int = 0
    videos: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    emotions: Counter = field(default_factory=Counter)
    timelines: list[str] = field(default_factory=list)
    chunks: int = 0
    seconds: float = 0.0
    driver_cpu_seconds: float = 0.0

    def skip(self, name: str, reason: str) -> None:
        self.skipped[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < EXAMPLES:
            shown.append(name)

    def to_dict(self) -> dict:
        record = {k: getattr(self, k) for k in ("found", "analysed", "already_done", "redone",
                                                "left", "faces", "frames", "videos", "chunks")}  # fmt: skip
        record["skipped"] = dict(self.skipped.most_common())
        record["skipped_examples"] = self.examples
        record["emotions"] = dict(self.emotions.most_common())
        record["timelines"] = self.timelines
        record["seconds"] = round(self.seconds, 2)
        record["inputs_per_second"] = round(self.analysed / max(self.seconds, 1e-9), 2)
        record["driver_cpu_seconds"] = round(self.driver_cpu_seconds, 3)
        return record

    def text(self) -> str:
        """The summary as lines for a person."""
        lines = [
            f"{self.found:,} inputs: {self.analysed:,} analysed in {self.seconds:.1f} s "
            f"({self.analysed / max(self.seconds, 1e-9):.1f}/s), {self.already_done:,} already "
            f"done, {self.redone:,} of them redone as changed"
        ]
        if self.videos:
            lines.append(f"{self.videos:,} videos, {self.frames:,} frames analysed")
        lines.append(f"{self.faces:,} faces")
        if self.emotions:
            total = sum(self.emotions.values())
            lines.append("emotions: " + ", ".join(
                f"{e} {n:,} ({n / total:.0%})" for e, n in self.emotions.most_common()))  # fmt: skip
        for reason, count in self.skipped.most_common():
            shown = ", ".join(self.examples.get(reason, []))
            lines.append(f"skipped {count:,}: {reason} (e.g. {shown})")
        if self.left:
            lines.append(f"{self.left:,} inputs whose worker was lost too often are left for the "
                         "next run of the same command")  # fmt: skip
        if self.timelines:
            lines.append(f"{len(self.timelines)} video timelines (PNG) in timelines/")
        return "\n".join(lines)


# Pools of workers. Each has ``slots`` (tasks it runs at once), ``submit(fn, *args)``,
# ``wait_first(futures, timeout)`` and ``close()``; a future's ``result()`` raises when its worker
# was lost.


class InlinePool:
    """Runs each task in the driver, at once (``--workers 0``)."""

    slots = 1

    def submit(self, fn, *args) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def wait_first(self, futures, timeout: float | None = None) -> list:
        return list(futures)

    def close(self) -> None:
        """Nothing runs in the background."""


class ProcessPool:
    """``workers`` processes (started fresh, not forked), each loading the model once with
    ``settings.threads`` threads; a pool broken by a killed process is started again."""

    def __init__(self, workers: int, settings: Settings, *, initializer=None) -> None:
        self.slots = workers
        self._args = (workers, settings, initializer)
        self._pool = self._start()

    def _start(self) -> concurrent.futures.ProcessPoolExecutor:
        workers, settings, initializer = self._args
        from ferlab.collection.work import init_process

        return concurrent.futures.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=initializer or init_process,
            initargs=(settings,),
        )

    def submit(self, fn, *args):
        try:
            return self._pool.submit(fn, *args)
        except concurrent.futures.BrokenExecutor:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._start()
            return self._pool.submit(fn, *args)

    def wait_first(self, futures, timeout: float | None = None) -> list:
        done, _ = concurrent.futures.wait(
            list(futures), timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED
        )
        return list(done)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DaskPool:
    """Tasks on a Dask client, their results taken as they complete (``distributed.as_completed``,
    so that waiting costs the same with 10 or 10,000 tasks in flight); ``slots`` None follows the
    cluster's worker threads (counted at most once a second), so that workers that join are used
    and lost ones not waited for."""

    def __init__(self, client, slots: int | None) -> None:
        from distributed import as_completed

        self.client = client
        self._fixed = slots
        self._counted, self._counted_at = 1, float("-inf")
        self._completed = as_completed()

    @property
    def slots(self) -> int:
        if self._fixed is not None:
            return max(1, self._fixed)
        now = time.monotonic()
        if now - self._counted_at >= 1.0:
            self._counted = max(1, sum(self.client.nthreads().values()))
            self._counted_at = now
        return self._counted

    def submit(self, fn, *args):
        future = self.client.submit(fn, *args, pure=False)
        self._completed.add(future)
        return future

    def wait_first(self, futures, timeout: float | None = None) -> list:
        """The futures done now, or as soon as one is (none when ``timeout`` passes first)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            done = self._completed.next_batch(block=False)
            if done or (deadline is not None and time.monotonic() >= deadline):
                return [f for f in done if f in futures]
            time.sleep(0.002)

    def close(self) -> None:
        """The client and cluster are closed by whoever opened them."""
        self._completed.clear()


@contextlib.contextmanager
def open_pool(
    settings: Settings,
    *,
    workers: int = 0,
    dask: bool = False,
    scheduler: str | None = None,
    cluster: str | None = None,
    jobs: int = 1,
    cores: int = 1,
    memory: str = "4GB",
    walltime: str | None = None,
) -> Iterator:
    """Where tasks run: this process (``workers`` 0), ``workers`` processes here (a local Dask
    cluster of them with ``dask``), a Dask cluster at ``scheduler``, or ``jobs`` batch jobs of
    ``cores`` workers through dask-jobqueue (``cluster``: slurm, pbs or htcondor)."""
    if workers < 0:
        raise FerlabError(f"--workers must be >= 0, got {workers}")
    if settings.threads < 1:
        raise FerlabError(f"--threads must be >= 1, got {settings.threads}")
    if scheduler is None and cluster is None and not dask:
        pool = InlinePool() if workers == 0 else ProcessPool(workers, settings)
        try:
            yield pool
        finally:
            pool.close()
        return
    if dask and workers == 0 and scheduler is None and cluster is None:
        raise FerlabError("--dask starts a local cluster of --workers N processes: give N >= 1")
    from ferlab.search.cluster import open_client

    with open_client(workers, scheduler=scheduler, cluster=cluster, jobs=jobs, cores=cores,
                     memory=memory, walltime=walltime,
                     threads=settings.threads) as (client, slots):  # fmt: skip
        yield DaskPool(client, slots)


@dataclass
class _Video:
    """A video whose ranges are being analysed: each part's frames once it is back."""

    name: str
    identity: Identity
    parts: int
    frames: dict[int, object] = field(default_factory=dict)


class Progress:
    """One progress line: redrawn in place on a terminal, a plain line now and then otherwise."""

    def __init__(self, stream: TextIO, *, enabled: bool, every: float, total=None) -> None:
        self.stream, self.enabled = stream, enabled
        self.tty = enabled and stream.isatty()
        self.every = TTY_PROGRESS_S if self.tty else every
        self.total = total or (lambda: None)
        self.started = self.last = time.monotonic()

    def tick(self, summary: Summary, *, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < self.every):
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        rate, face_rate = summary.analysed / elapsed, summary.faces / elapsed
        total = self.total()
        processed = summary.analysed + summary.already_done - summary.redone
        left = None
        if total is not None and rate > 0:
            left = max(0, total - processed - summary.left) / rate
        line = (
            f"{processed:,}"
            + (f"/{total:,}" if total is not None else "")
            + f" inputs ({rate:.1f}/s), {summary.faces:,} faces ({face_rate:.1f}/s)"
            + f", {sum(summary.skipped.values()):,} skipped"
            + (f", {_duration(left)} left" if left is not None else "")
        )
        if self.tty:
            self.stream.write("\r" + line.ljust(78) + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


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
        write_json(folder / MANIFEST, record)
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

    wanted = {"half_life": settings.smooth, "min_confidence": settings.min_confidence}
    accepted = inspect.signature(FaceTracker).parameters
    return FaceTracker(**{k: v for k, v in wanted.items() if k in accepted})


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


def save_timeline(rows: list[dict], class_names: list[str], path: Path, title: str) -> bool:
    """Each track's emotion probabilities over time as a PNG; False when there is no face."""
    series: dict[int, list] = {}
    for row in rows:
        if row.get("track") is not None:
            probs = {c: row[f"prob_{c}"] for c in class_names}
            series.setdefault(row["track"], []).append((row["time"], probs))
    if not series:
        return False
    from ferlab.plots import plot_emotion_timeline

    path.parent.mkdir(parents=True, exist_ok=True)
    plot_emotion_timeline(series, class_names, path, title=title)
    return True


def timeline_path(folder: Path, name: str) -> Path:
    """Where the timeline of video ``name`` goes: its path mirrored under ``timelines/``."""
    parts = [p for p in Path(name).parts if p not in ("/", "..", ".")]
    return folder / "timelines" / (Path(*parts).as_posix() + ".png")


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
        write_json(out / "summary.json", run.summary.to_dict())
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
