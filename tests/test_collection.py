"""``ferlab analyse``: lazy inputs, atomic chunks, resume exactly once, videos split in ranges.

The cluster tests run `dask scheduler` and `dask worker` as their own OS processes, as the README
says, and drive them with `ferlab analyse --scheduler`; a worker, then a driver, is killed with
SIGKILL mid-run, and the output ends with each input's rows exactly once.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferlab.cli import main
from ferlab.collection import store as store_module
from ferlab.collection.pools import InlinePool, ProcessPool
from ferlab.collection.runner import Options, analyse_collection, join_video
from ferlab.collection.store import (
    IDENTITY_COLUMNS,
    ROW_COLUMNS,
    ChunkStore,
    arrow_schema,
    columns,
    read_rows,
)
from ferlab.collection.walk import Input, Skip, iter_inputs
from ferlab.collection.work import PhotoTask, RangeTask, Settings, recognizer, run_task

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ONE_THREAD = {var: "1" for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def real_photo(kind: str, size: tuple[int, int]) -> np.ndarray:
    import skimage.data

    source = skimage.data.astronaut() if kind == "face" else skimage.data.coffee()
    return np.asarray(Image.fromarray(source).resize(size))


def make_collection(folder: Path, n: int, size=(160, 160)) -> list[str]:
    """``n`` JPEGs in a tree of three folders (every other one with a face); their row names."""
    face, empty = real_photo("face", size), real_photo("none", size)
    names = []
    for i in range(n):
        sub = folder / ("" if i % 3 == 0 else "a" if i % 3 == 1 else "a/b")
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"p{i:04d}.jpg"
        Image.fromarray(face if i % 2 == 0 else empty).save(path, quality=90)
        names.append(path.as_posix())
    return names


def per_input(folder: Path) -> Counter:
    """How many times each input occurs as a row group: each input's rows must come from one
    analysis (one set of face indices 0..k-1, or one row without a face)."""
    counts: Counter = Counter()
    for row in read_rows(folder):
        if row["face"] in (None, 0) and row["frame"] is None:
            counts[row["file"]] += 1
    return counts


def chunk_files(out: Path) -> list[Path]:
    return sorted((out / "chunks").glob("part-*"))


# --- inputs -----------------------------------------------------------------------------------


def test_inputs_are_walked_lazily_with_reasons_for_skips(tmp_path):
    names = make_collection(tmp_path / "c", 6, size=(32, 32))
    (tmp_path / "c" / "notes.txt").write_text("not a photo")
    (tmp_path / "c" / ".hidden.jpg").write_bytes(b"left out")
    os.mkfifo(tmp_path / "c" / "a" / "pipe.jpg")
    listed = tmp_path / "list.txt"
    listed.write_text(f"# a comment\n\n{names[1]}\n{tmp_path}/gone.jpg\n")
    items = iter_inputs([str(tmp_path / "c"), f"{tmp_path}/c/a/b/*.jpg"], list_file=listed)
    assert iter(items) is items  # a generator: nothing is listed ahead
    first = next(items)  # the folder's own files first, in name order
    assert first == Skip(f"{tmp_path}/c/notes.txt", "not an image or video")
    rest = [first, *items]
    found = [i.name for i in rest if isinstance(i, Input)]
    skips = {i.name.rsplit("/", 1)[1]: i.reason for i in rest if isinstance(i, Skip)}
    # Depth first, names in order; then the glob's matches, then the list file's.
    walked = [names[0], names[3], names[1], names[4], names[2], names[5]]
    assert found == walked + [names[2], names[5], names[1]]
    assert skips == {"notes.txt": "not an image or video", "pipe.jpg": "not a regular file",
                     "gone.jpg": "no such file or folder"}  # fmt: skip
    photo = next(i for i in rest if isinstance(i, Input))
    assert photo.size == Path(photo.path).stat().st_size and not photo.is_video


# --- the output's schema ----------------------------------------------------------------------

DOCUMENTED = REPO / "docs" / "collection.md"
# The schema, version 1, as it must stay: a change here is a new SCHEMA_VERSION.
SCHEMA_V1 = [
    ("file", "string"), ("file_size", "int64"), ("file_mtime_ns", "int64"),
    ("file_sha256", "string"), ("kind", "string"), ("status", "string"), ("note", "string"),
    ("frame", "int64"), ("time", "double"), ("face", "int32"), ("track", "int32"),
    ("x", "int32"), ("y", "int32"), ("w", "int32"), ("h", "int32"), ("score", "double"),
    ("right_eye_x", "double"), ("right_eye_y", "double"), ("left_eye_x", "double"),
    ("left_eye_y", "double"), ("nose_x", "double"), ("nose_y", "double"), ("mouth_x", "double"),
    ("mouth_y", "double"), ("right_ear_x", "double"), ("right_ear_y", "double"),
    ("left_ear_x", "double"), ("left_ear_y", "double"), ("emotion", "string"),
    ("probability", "double"),
]  # fmt: skip


def test_the_output_schema_is_documented_and_stable(tmp_path):
    import pyarrow.parquet as pq

    assert store_module.SCHEMA_VERSION == 1
    assert [*IDENTITY_COLUMNS, *ROW_COLUMNS] == SCHEMA_V1
    assert columns(CLASSES)[len(SCHEMA_V1) :] == [(f"prob_{c}", "double") for c in CLASSES]
    # Every column is in the documentation's table with its type, and nothing else is.
    table = re.findall(r"^\| `([a-z0-9_<>]+)` \| (\w+) \|", DOCUMENTED.read_text(), re.M)
    assert table == [*SCHEMA_V1, ("prob_<class>", "double")]
    # A real chunk has exactly this schema, its version and classes in its metadata.
    make_collection(tmp_path / "c", 2)
    settings = Settings()
    analyse_collection(iter_inputs([tmp_path / "c"]), tmp_path / "out", settings, InlinePool(),
                       class_names=recognizer(settings).class_names,
                       options=Options(progress=False))  # fmt: skip
    schema = pq.read_schema(chunk_files(tmp_path / "out")[0])
    assert schema.equals(arrow_schema(CLASSES), check_metadata=True)
    assert schema.metadata[b"ferlab.schema_version"] == b"1"
    rows = list(read_rows(tmp_path / "out"))
    assert [r["status"] for r in rows] == ["face", "no_face"]
    assert rows[0]["emotion"] == "happy" and rows[0]["prob_happy"] == rows[0]["probability"]
    assert rows[0]["right_eye_x"] is not None and rows[0]["kind"] == "photo"


# --- resume, changes, torn chunks (in this process) ---------------------------------------------


def analyse(folder, out, *, fmt="parquet", hash=False, stop_after_chunks=None, **options):
    settings = Settings()
    options = Options(fmt=fmt, hash=hash, progress=False, **options)
    return analyse_collection(iter_inputs([folder]), out, settings, InlinePool(),
                              class_names=recognizer(settings).class_names, options=options,
                              stop_after_chunks=stop_after_chunks)  # fmt: skip


def test_a_stopped_run_resumes_and_a_changed_input_is_redone(tmp_path):
    folder, out = tmp_path / "c", tmp_path / "out"
    names = make_collection(folder, 12)
    first = analyse(folder, out, batch=1, chunk_seconds=0, stop_after_chunks=2)
    assert first.analysed == 4 and len(chunk_files(out)) == 2  # two inputs per chunk
    second = analyse(folder, out, batch=2)
    assert (second.already_done, second.analysed) == (4, 8)
    assert per_input(out) == Counter({n: 1 for n in names})
    # Nothing to do on a third run; then one photo is replaced by another (a face by none).
    assert analyse(folder, out).analysed == 0
    changed = names[0]
    Image.fromarray(real_photo("none", (160, 160))).save(changed, quality=90)
    third = analyse(folder, out)
    assert (third.analysed, third.redone) == (1, 1)
    assert per_input(out) == Counter({n: 1 for n in names})
    rows = [r for r in read_rows(out) if r["file"] == changed]
    assert [r["status"] for r in rows] == ["no_face"]  # the new content's rows, the old ones gone
    assert rows[0]["file_size"] == Path(changed).stat().st_size
    assert sum(1 for p in chunk_files(out) for r in ChunkStore(out, "parquet", CLASSES).read(
        int(p.stem.split("-")[1]), p) if r["file"] == changed) == 1  # fmt: skip


def test_with_hash_a_copy_with_new_times_is_not_redone_but_same_size_edits_are(tmp_path):
    folder, out = tmp_path / "c", tmp_path / "out"
    names = make_collection(folder, 3)
    analyse(folder, out, hash=True)
    os.utime(names[1], ns=(1, 1))  # same bytes, another time: not redone
    assert analyse(folder, out, hash=True).analysed == 0
    # Same size and time, other bytes (an edit in place within one time tick): redone.
    stat = os.stat(names[2])
    data = bytearray(Path(names[2]).read_bytes())
    data[-3] ^= 0xFF
    Path(names[2]).write_bytes(bytes(data))
    os.utime(names[2], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = analyse(folder, out, hash=True)
    assert (again.analysed, again.redone) == (1, 1)
    assert per_input(out) == Counter({n: 1 for n in names})
    sha = {r["file"]: r["file_sha256"] for r in read_rows(out)}
    assert all(len(v) == 64 for v in sha.values())


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_a_torn_chunk_is_never_read_as_data_and_its_inputs_are_redone(tmp_path, fmt):
    folder, out = tmp_path / "c", tmp_path / "out"
    names = make_collection(folder, 6)
    analyse(folder, out, fmt=fmt, batch=1, chunk_seconds=0)
    chunks = chunk_files(out)
    assert len(chunks) == 3
    victim = chunks[1]
    raw = victim.read_bytes()
    victim.write_bytes(raw[: len(raw) * 2 // 3])  # cut short, as a copy or a full disk leaves it
    # What a writer killed mid-write leaves: a hidden temporary file, never a chunk's name.
    (out / "chunks" / f".part-000004.{fmt}.x1y2.tmp").write_bytes(raw[: len(raw) // 2])
    served = list(read_rows(out))  # readers skip it: no half rows
    assert len({r["file"] for r in served}) == 4
    with pytest.warns(UserWarning, match="not a whole chunk"):
        again = analyse(folder, out, fmt=fmt)
    assert again.analysed == 2 and again.already_done == 4
    assert (out / "chunks" / f"{victim.name}.torn").exists()
    assert not list((out / "chunks").glob(".*.tmp"))
    assert per_input(out) == Counter({n: 1 for n in names})


def test_settings_of_a_resumed_run_must_match_and_a_foreign_folder_is_refused(tmp_path, capsys):
    folder = tmp_path / "c"
    make_collection(folder, 2)
    out = tmp_path / "out"
    assert main(["analyse", str(folder), "--out", str(out), "--quiet"]) == 0
    assert main(["analyse", str(folder), "--out", str(out), "--quiet", "--every", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "other settings" in err and "every" in err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.pdf").write_text("mine")
    assert main(["analyse", str(folder), "--out", str(foreign), "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["analyse", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "--list" in capsys.readouterr().err


def test_a_run_where_nothing_could_be_read_exits_2_in_one_line_and_leaves_no_folder(
    tmp_path, capsys
):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"not a photo at all")
    for inputs in ([str(tmp_path / "missing")], [str(broken / "a.jpg")]):
        out = tmp_path / "out"
        assert main(["analyse", *inputs, "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "nothing could be analysed" in err
        assert not out.exists()


# --- videos -----------------------------------------------------------------------------------


def write_video(path: Path, seconds: float, fps: int = 10) -> None:
    """A face moving across a real background, as an MP4 (OpenCV's mp4v)."""
    import cv2

    face, background = real_photo("face", (200, 200)), real_photo("none", (320, 240))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (320, 240))
    for i in range(int(seconds * fps)):
        frame = background.copy()
        x = int(i * 120 / (seconds * fps))
        frame[20:220, x : x + 200] = face
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def test_a_long_video_is_split_in_ranges_and_its_tracks_joined_as_in_one_pass(tmp_path):
    from ferlab.vision.batch import analyze_inputs

    folder, out = tmp_path / "v", tmp_path / "out"
    folder.mkdir()
    video = folder / "talk.mp4"
    write_video(video, 10)
    settings = Settings(every=5)
    found = recognizer(settings)
    tasks = []

    def counting(task, settings):
        tasks.append(task)
        return run_task(task, settings)

    summary = analyse_collection(iter_inputs([folder]), out, settings, InlinePool(),
                                 class_names=found.class_names, task_fn=counting,
                                 options=Options(segment_seconds=3, progress=False))  # fmt: skip
    assert [(t.start, t.stop) for t in tasks] == [(0, 30), (30, 60), (60, 90), (90, -1)]
    rows = list(read_rows(out))
    # The same frames, tracks and smoothed emotions as today's one-pass `ferlab predict`.
    one_pass = [r.to_dict() for r in analyze_inputs(found, [video], every=5)]
    assert len(rows) == len(one_pass) == 20
    for row, ref in zip(rows, one_pass, strict=True):
        assert (row["frame"], row["time"], row["track"]) == (
            ref["frame"],
            ref["time"],
            ref["track"],
        )
        assert row["emotion"] == ref["emotion"]
        assert row["prob_happy"] == pytest.approx(ref["probabilities"]["happy"], abs=1e-6)
    assert {r["track"] for r in rows} == {1}  # one face, one track across the four ranges
    assert summary.videos == 1 and summary.frames == 20
    png = out / summary.timelines[0]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ranges_joined_match_a_single_range(tmp_path):
    video = tmp_path / "v.mp4"
    write_video(video, 4)
    settings = Settings(every=3)
    whole = run_task(RangeTask(str(video), "v", 0, -1, 0), settings)[1]
    parts = [f for k, (a, b) in enumerate([(0, 9), (9, 21), (21, -1)])
             for f in run_task(RangeTask(str(video), "v", a, b, k), settings)[1]]  # fmt: skip
    assert [f[:2] for f in parts] == [f[:2] for f in whole]
    names = recognizer(settings).class_names
    assert join_video(parts, settings, names) == join_video(whole, settings, names)


# --- progress and summary ---------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_and_summary_with_reasons_and_emotions(tmp_path):
    folder = tmp_path / "c"
    make_collection(folder, 4)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("x")
    settings = Settings()
    names = recognizer(settings).class_names
    plain = io.StringIO()
    summary = analyse_collection(iter_inputs([folder]), tmp_path / "o1", settings, InlinePool(),
                                 class_names=names, total=lambda: 5, stream=plain,
                                 options=Options(progress_every=0, batch=1))  # fmt: skip
    lines = plain.getvalue().splitlines()
    assert len(lines) >= 3 and "\r" not in plain.getvalue()
    assert re.fullmatch(r"5/5 inputs \([\d.]+/s\), 2 faces \([\d.]+/s\), 2 skipped, 0s left",
                        lines[-1])  # fmt: skip
    assert summary.skipped == Counter({"not an image or video": 1, "unreadable": 1})
    assert summary.emotions == Counter({"happy": 2}) and summary.faces == 2
    text = summary.text()
    assert "skipped 1: unreadable (e.g. " in text and "broken.jpg" in text
    assert "emotions: happy 2 (100%)" in text
    record = json.loads((tmp_path / "o1" / "summary.json").read_text())
    assert record["skipped"] == {"not an image or video": 1, "unreadable": 1}
    assert record["analysed"] == 5 and record["emotions"] == {"happy": 2}
    unreadable = [r for r in read_rows(tmp_path / "o1") if r["status"] == "unreadable"]
    assert len(unreadable) == 1 and unreadable[0]["note"]
    tty = Terminal()
    analyse_collection(iter_inputs([folder]), tmp_path / "o2", settings, InlinePool(),
                       class_names=names, total=lambda: 5, stream=tty,
                       options=Options(batch=1))  # fmt: skip
    drawn = tty.getvalue()
    assert drawn.startswith("\r") and drawn.endswith("\n") and drawn.count("\n") == 1
    assert "5/5 inputs" in drawn.rsplit("\r", 1)[1]


# --- a killed worker of the process pool --------------------------------------------------------


def no_model(settings) -> None:
    """A pool initializer that loads nothing (the task below needs no model)."""


def dies_once(task, settings):
    """Instant rows for each photo; the first attempt at the batch holding 'p0005' kills its
    own process (SIGKILL), as the OOM killer would."""
    marker = Path(os.environ["FERLAB_TEST_MARKER"])
    if any(name.endswith("p0005.jpg") for _, name in task.items) and not marker.exists():
        marker.write_text("killed")
        os.kill(os.getpid(), signal.SIGKILL)
    return [(name, [{"status": "no_face", "emotion": ""}]) for _, name in task.items]


def test_a_killed_pool_process_is_replaced_and_each_input_done_once(tmp_path, monkeypatch):
    folder, out = tmp_path / "c", tmp_path / "out"
    names = make_collection(folder, 24, size=(16, 16))
    monkeypatch.setenv("FERLAB_TEST_MARKER", str(tmp_path / "marker"))
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # the pool imports this module
    pool = ProcessPool(2, Settings(), initializer=no_model)
    try:
        summary = analyse_collection(iter_inputs([folder]), out, Settings(), pool,
                                     class_names=CLASSES, task_fn=dies_once,
                                     options=Options(batch=2, progress=False))  # fmt: skip
    finally:
        pool.close()
    assert (tmp_path / "marker").exists()
    assert summary.analysed == 24 and summary.left == 0
    assert per_input(out) == Counter({n: 1 for n in names})


# --- a real multi-process Dask cluster ----------------------------------------------------------


@pytest.fixture
def dask_cluster(tmp_path):
    """A `dask scheduler` and two one-thread `dask worker` processes; yields (address, procs)."""
    from test_cluster import Processes, free_port, wait_for

    procs = Processes(tmp_path)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, **ONE_THREAD}
    procs.start("scheduler", [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port",
                              str(port), "--no-dashboard", "--idle-timeout", "300"], env)  # fmt: skip
    worker = [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--nworkers", "1",
              "--no-dashboard", "--death-timeout", "60"]  # fmt: skip
    procs.start("worker-a", worker, env)
    procs.start("worker-b", worker, env)

    def workers() -> int:
        from distributed import Client

        try:
            with Client(address, timeout="2s") as client:
                return len(client.scheduler_info()["workers"])
        except OSError:
            return 0

    wait_for("two dask workers", lambda: workers() >= 2, 60, procs.logs)
    try:
        yield address, procs, wait_for
    finally:
        procs.close()


def driver_args(folder: Path, out: Path, address: str) -> list[str]:
    return [str(BIN / "ferlab"), "analyse", str(folder), "--out", str(out), "--scheduler",
            address, "--batch", "2", "--chunk-seconds", "0.2", "--quiet"]  # fmt: skip


def test_on_a_dask_cluster_a_killed_worker_loses_no_input_and_doubles_none(tmp_path, dask_cluster):
    address, procs, wait_for = dask_cluster
    folder, out = tmp_path / "c", tmp_path / "out"
    names = make_collection(folder, 120, size=(480, 360))
    env = {**os.environ, **ONE_THREAD}
    driver = procs.start("driver", driver_args(folder, out, address), env)
    wait_for("a first chunk", lambda: len(chunk_files(out)) >= 1, 60, procs.logs)
    procs.kill("worker-a")  # SIGKILL, with its nanny, mid-run
    assert driver.poll() is None, "the run ended before the kill"
    assert driver.wait(timeout=120) == 0, procs.logs()
    assert per_input(out) == Counter({n: 1 for n in names})
    summary = json.loads((out / "summary.json").read_text())
    assert summary["analysed"] == 120 and summary["left"] == 0
    assert summary["faces"] == 60


def test_on_a_dask_cluster_a_killed_driver_resumes_with_each_input_once(tmp_path, dask_cluster):
    address, procs, wait_for = dask_cluster
    folder, out = tmp_path / "c", tmp_path / "out"
    names = make_collection(folder, 120, size=(480, 360))
    env = {**os.environ, **ONE_THREAD}
    driver = procs.start("driver", driver_args(folder, out, address), env)
    wait_for("two chunks", lambda: len(chunk_files(out)) >= 2, 60, procs.logs)
    procs.kill("driver")  # SIGKILL: no chance to write what it holds
    assert driver.returncode == -signal.SIGKILL
    before = per_input(out)
    assert 0 < sum(before.values()) < 120 and set(before.values()) == {1}
    again = procs.start("driver-again", driver_args(folder, out, address), env)
    assert again.wait(timeout=120) == 0, procs.logs()
    assert per_input(out) == Counter({n: 1 for n in names})
    summary = json.loads((out / "summary.json").read_text())
    assert summary["already_done"] == sum(before.values())
    assert summary["analysed"] == 120 - sum(before.values())
    assert not list((out / "chunks").glob(".*.tmp"))


def test_analyse_runs_in_worker_processes_and_on_a_local_dask_cluster(tmp_path):
    folder = tmp_path / "c"
    names = make_collection(folder, 8)
    for extra in (["--workers", "2"], ["--workers", "2", "--dask"]):
        out = tmp_path / ("out" + "".join(extra))
        assert main(["analyse", str(folder), "--out", str(out), "--quiet", "--batch", "2",
                     "--format", "jsonl", *extra]) == 0  # fmt: skip
        assert per_input(out) == Counter({n: 1 for n in names})
        rows = list(read_rows(out))
        assert Counter(r["status"] for r in rows) == Counter({"face": 4, "no_face": 4})


def test_photo_task_reports_an_unreadable_photo_and_goes_on(tmp_path):
    good = tmp_path / "a.jpg"
    Image.fromarray(real_photo("face", (160, 160))).save(good)
    bad = tmp_path / "b.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result = run_task(PhotoTask(((str(bad), "b.png"), (str(good), "a.jpg"))), Settings())
    assert isinstance(result[0][1], str) and result[1][1][0]["emotion"] == "happy"
