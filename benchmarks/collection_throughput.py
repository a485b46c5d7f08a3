"""ferlab analyse at scale: photos/s by workers, the driver's memory, and a simulated big cluster.

1. Throughput. A collection of ``--photos`` (20,000) real photos is built once into a cache outside
   the repository, as the pipeline benchmark builds its scenes: 1 to 3 FER2013 Training faces
   pasted at 96 to 200 pixels on 640x480 photos that ship with scikit-image and scikit-learn,
   saved as JPEG. The same fixed prefix of it (``--prefix`` photos, in walk order) is then
   analysed by today's single-process ``ferlab predict`` path (collect_inputs, analyze_inputs,
   write_rows to a CSV file) and by ``ferlab analyse`` with 1 and 2 worker processes and on a
   local Dask cluster of 2 worker processes, in ``--rounds`` interleaved rounds, side by side in
   one run. Every configuration runs one thread per process and has its model loaded before the
   clock starts (a pool's start is given apart).
2. The driver's memory. ``--memory-sizes`` (20,000 and 200,000) synthetic inputs of instant work
   (each task returns a full face row at once) run through the driver in this process, each size
   in a fresh interpreter; its peak resident memory is set beside that of the record of what is
   done (a :class:`Ledger` of as many names) alone.
3. A simulated large cluster. ``--sim-inputs`` (1,000,000) synthetic inputs of instant work on
   ``--sim-workers`` (200) simulated workers: threads of 4 Dask worker processes on a real Dask
   scheduler. The driver's CPU seconds and wall seconds per block of 100,000 inputs show whether
   its cost per input stays flat as the run grows.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/collection_throughput.py \
        --data ../shared/data/fer2013-images.tar.gz --out benchmarks/results/collection_throughput.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from harness import machine, write_record

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ferlab-benchmarks"
RESULT = Path(__file__).parent / "results" / "collection_throughput.json"
CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


# --- the collection -----------------------------------------------------------------------------


def build_collection(data: str, count: int, seed: int) -> Path:
    """``count`` scene photos (JPEG, 640x480) under the cache, 1,000 per folder; built once."""
    from PIL import Image

    from ferlab.data import load_fer2013
    from ferlab.vision.scenes import background_photos, place_faces

    folder = CACHE / f"collection-{count}-seed{seed}"
    done = folder / ".complete"
    if done.exists():
        return folder
    faces = load_fer2013(data).split("training").images
    backgrounds = background_photos()
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    for i in range(count):
        n = int(rng.integers(1, 4))
        crops = faces[rng.choice(len(faces), n, replace=False)]
        background = backgrounds[int(rng.integers(len(backgrounds)))]
        for _ in range(20):  # as the pipeline benchmark: draw again when the faces do not fit
            try:
                scene, _ = place_faces(background, crops, [int(s) for s in rng.integers(96, 201, n)],
                                       rng)  # fmt: skip
                break
            except ValueError:
                continue
        else:
            scene = background
        path = folder / f"{i // 1000:03d}" / f"scene_{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(scene).save(path, quality=90)
        if (i + 1) % 2000 == 0:
            print(f"built {i + 1:,} photos in {time.perf_counter() - started:.0f} s", flush=True)
    marker = json.dumps({"photos": count, "seed": seed})
    done.write_text(marker)
    return folder


# --- 1. throughput --------------------------------------------------------------------------


def predict_path(files: list[Path], out: Path) -> float:
    """Today's ``ferlab predict`` on these files (one process, one thread); seconds."""
    import cv2

    from ferlab.vision.batch import analyze_inputs, collect_inputs, write_rows
    from ferlab.vision.recognizer import EmotionRecognizer

    cv2.setNumThreads(1)
    recognizer = EmotionRecognizer(threads=1)  # loaded before the clock, as for the workers
    started = time.perf_counter()
    inputs = collect_inputs(files)
    with open(out, "w", encoding="utf-8") as stream:
        write_rows(analyze_inputs(recognizer, inputs), stream, "csv", recognizer.class_names)
    return time.perf_counter() - started


def warm_pool(pool, slots: int) -> None:
    """Start every worker process and load its model before the clock starts."""
    from ferlab.collection.work import PhotoTask

    futures = [pool.submit(sleep_then_load, PhotoTask(()), None) for _ in range(slots)]
    for future in futures:
        future.result()


def sleep_then_load(task, settings) -> list:
    """Holds a worker long enough that each warm-up task lands on its own process."""
    from ferlab.collection.work import Settings, recognizer

    recognizer(Settings(threads=1))
    time.sleep(1.0)
    return []


def analyse_prefix(folder: Path, prefix: int, out: Path, kind: str) -> tuple[float, float, int]:
    """``ferlab analyse`` on the first ``prefix`` photos: (seconds, start seconds, faces)."""
    from ferlab.collection.pools import open_pool
    from ferlab.collection.runner import Options, analyse_collection
    from ferlab.collection.walk import iter_inputs
    from ferlab.collection.work import Settings

    settings = Settings(threads=1)
    workers = {"analyse_1_worker": 1, "analyse_2_workers": 2, "analyse_dask_2_workers": 2}[kind]
    started = time.perf_counter()
    with open_pool(settings, workers=workers, dask=kind.startswith("analyse_dask")) as pool:
        warm_pool(pool, workers)
        start_s = time.perf_counter() - started
        clock = time.perf_counter()
        summary = analyse_collection(
            itertools.islice(iter_inputs([folder]), prefix), out, settings, pool,
            class_names=CLASSES, options=Options(progress=False),
        )  # fmt: skip
        seconds = time.perf_counter() - clock
    assert summary.analysed == prefix, summary.to_dict()
    return seconds, start_s, summary.faces


def throughput(folder: Path, prefix: int, rounds: int) -> dict:
    from ferlab.collection.walk import Input, iter_inputs

    files = [Path(i.path) for i in itertools.islice(iter_inputs([folder]), prefix)
             if isinstance(i, Input)]  # fmt: skip
    assert len(files) == prefix
    kinds = ["predict_single_process", "analyse_1_worker", "analyse_2_workers",
             "analyse_dask_2_workers"]  # fmt: skip
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    load = []
    with tempfile.TemporaryDirectory(prefix="ferlab-collection-") as scratch:
        for r in range(rounds):
            for kind in kinds[r % 4 :] + kinds[: r % 4]:  # each round starts with another
                load.append(os.getloadavg()[0])
                out = Path(scratch) / f"{kind}-{r}"
                if kind == "predict_single_process":
                    seconds, start_s, faces = predict_path(files, Path(f"{out}.csv")), 0.0, None
                else:
                    seconds, start_s, faces = analyse_prefix(folder, prefix, out, kind)
                runs[kind].append({"seconds": round(seconds, 2), "photos_per_second":
                                   round(prefix / seconds, 2), "pool_start_seconds":
                                   round(start_s, 2), "faces": faces})  # fmt: skip
                print(f"round {r + 1} {kind}: {prefix / seconds:.2f} photos/s", flush=True)
    best = {k: max(run["photos_per_second"] for run in v) for k, v in runs.items()}
    median = {k: float(np.median([run["photos_per_second"] for run in v])) for k, v in runs.items()}
    return {
        "photos_timed_per_configuration": prefix,
        "rounds": rounds,
        "runs": runs,
        "best_photos_per_second": best,
        "median_photos_per_second": median,
        "two_workers_over_one_median": round(
            median["analyse_2_workers"] / median["analyse_1_worker"], 2
        ),
        "two_workers_over_one": round(best["analyse_2_workers"] / best["analyse_1_worker"], 2),
        "dask_2_over_one_worker": round(
            best["analyse_dask_2_workers"] / best["analyse_1_worker"], 2
        ),
        "one_worker_over_predict": round(
            best["analyse_1_worker"] / best["predict_single_process"], 2
        ),
        "two_workers_over_predict": round(
            best["analyse_2_workers"] / best["predict_single_process"], 2
        ),
        "load_average_1min_at_each_start": [round(x, 2) for x in load],
    }


# --- 2. memory of the driver --------------------------------------------------------------------


def synthetic_inputs(count: int):
    """Inputs that need no file: names as a deep collection's, sizes and times made up."""
    from ferlab.collection.walk import Input

    for i in range(count):
        name = f"archive/{i // 100_000:02d}/{i // 1000 % 100:02d}/photo_{i:07d}.jpg"
        yield Input(name, name, 50_000 + i % 997, 1_700_000_000_000_000_000 + i)


def instant_face(task, settings) -> list:
    """Instant work: one full face row per photo, as a real analysis returns it."""
    row = {"status": "face", "face": 0, "x": 10, "y": 20, "w": 100, "h": 100, "score": 0.9,
           "emotion": "happy", "probability": 0.9,
           **{f"{n}_{a}": 1.0 for n in ("right_eye", "left_eye", "nose", "mouth", "right_ear",
                                         "left_ear") for a in "xy"},
           **{f"prob_{c}": 0.1 for c in CLASSES}}  # fmt: skip
    return [(name, [dict(row)]) for _, name in task.items]


def proc_status_kb(field: str) -> int:
    """A memory figure of this process from /proc/self/status (kB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def memory_child(mode: str, count: int) -> dict:
    """In a fresh interpreter: peak RSS of the driver (``driver``) or of the ledger alone."""
    import pyarrow.parquet  # noqa: F401 (imported before the baseline, as the driver needs it)

    from ferlab.collection.ledger import Identity, Ledger
    from ferlab.collection.pools import InlinePool
    from ferlab.collection.runner import Options, analyse_collection
    from ferlab.collection.work import Settings

    baseline = proc_status_kb("VmRSS")
    started = time.perf_counter()
    if mode == "ledger":
        ledger = Ledger()
        for item in synthetic_inputs(count):
            ledger.record(item.name, Identity(item.size, item.mtime_ns), 1)
    else:
        with tempfile.TemporaryDirectory(prefix="ferlab-driver-") as out:
            summary = analyse_collection(synthetic_inputs(count), out, Settings(), InlinePool(),
                                         class_names=CLASSES, task_fn=instant_face,
                                         options=Options(progress=False))  # fmt: skip
            assert summary.analysed == count
    peak = proc_status_kb("VmHWM")  # this process's peak (ru_maxrss keeps the parent's)
    return {"inputs": count, "baseline_mb": round(baseline / 1024, 1),
            "peak_mb": round(peak / 1024, 1), "growth_mb": round((peak - baseline) / 1024, 1),
            "seconds": round(time.perf_counter() - started, 2),
            "inputs_per_second": round(count / (time.perf_counter() - started))}  # fmt: skip


def memory(sizes: list[int]) -> dict:
    result = {}
    for mode in ("driver", "ledger"):
        for count in sizes:
            done = subprocess.run([sys.executable, __file__, "--memory-child", mode, str(count)],
                                  capture_output=True, text=True, check=True)  # fmt: skip
            result[f"{mode}_{count}"] = json.loads(done.stdout.strip().splitlines()[-1])
            print(mode, count, result[f"{mode}_{count}"], flush=True)
    small, large = sizes[0], sizes[-1]
    extra = large - small

    def per_input(mode: str) -> float:
        grown = result[f"{mode}_{large}"]["growth_mb"] - result[f"{mode}_{small}"]["growth_mb"]
        return round(grown * 1024 * 1024 / extra, 1)

    result["driver_bytes_per_extra_input"] = per_input("driver")
    result["ledger_bytes_per_extra_input"] = per_input("ledger")
    result["driver_beyond_ledger_bytes_per_extra_input"] = round(
        per_input("driver") - per_input("ledger"), 1
    )
    return result


# --- 3. a simulated large cluster ---------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def dask_processes(workers: int, processes: int):
    """A `dask scheduler` and `dask worker` processes of ``workers // processes`` threads each,
    apart from this driver's process (so that its CPU time is its own); yields the address."""
    from distributed import Client

    bin_dir = Path(sys.executable).parent
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    started = [subprocess.Popen([str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1",
                                 "--port", str(port), "--no-dashboard"], **quiet)]  # fmt: skip
    started.append(subprocess.Popen([str(bin_dir / "dask"), "worker", address, "--nworkers",
                                     str(processes), "--nthreads", str(workers // processes),
                                     "--no-dashboard"], **quiet))  # fmt: skip
    try:
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(processes, timeout=120)
        yield address
    finally:
        for proc in reversed(started):
            proc.terminate()
            proc.wait(timeout=60)


def simulate(count: int, workers: int, processes: int, block: int) -> dict:
    from distributed import Client

    from ferlab.collection.pools import DaskPool
    from ferlab.collection.runner import Options, analyse_collection
    from ferlab.collection.work import Settings

    marks: list[tuple[int, float, float]] = []

    def counted():
        for i, item in enumerate(synthetic_inputs(count)):
            if i % block == 0:
                marks.append((i, time.perf_counter(), time.process_time()))
            yield item
        marks.append((count, time.perf_counter(), time.process_time()))

    with (
        dask_processes(workers, processes) as address,
        Client(address) as client,
        tempfile.TemporaryDirectory(prefix="ferlab-sim-") as out,
    ):
        summary = analyse_collection(counted(), out, Settings(), DaskPool(client, workers),
                                     class_names=CLASSES, task_fn=instant_no_face,
                                     options=Options(progress=False, batch=16))  # fmt: skip
    assert summary.analysed == count, summary.to_dict()
    blocks = []
    for (i0, w0, c0), (i1, w1, c1) in itertools.pairwise(marks):
        blocks.append({"inputs": i1, "wall_inputs_per_second": round((i1 - i0) / (w1 - w0)),
                       "driver_cpu_microseconds_per_input": round(1e6 * (c1 - c0) / (i1 - i0), 1)})  # fmt: skip
    cpu = [b["driver_cpu_microseconds_per_input"] for b in blocks[1:]]  # the first fills the slots
    half = len(cpu) // 2
    return {
        "inputs": count,
        "simulated_workers": workers,
        "worker_processes": processes,
        "scheduler": "its own process (dask scheduler), workers too (dask worker)",
        "photos_per_task": 16,
        "tasks_in_flight": 2 * workers,
        "wall_seconds": round(summary.seconds, 1),
        "inputs_per_second": round(count / summary.seconds),
        "driver_cpu_seconds": round(summary.driver_cpu_seconds, 1),
        "driver_inputs_per_cpu_second": round(count / summary.driver_cpu_seconds),
        "chunks": summary.chunks,
        "by_block": blocks,
        "driver_cpu_per_input_late_half_over_early_half": round(
            (sum(cpu[half:]) / len(cpu[half:])) / (sum(cpu[:half]) / max(1, half)), 2
        ),
    }


def instant_no_face(task, settings) -> list:
    return [(name, [{"status": "no_face", "emotion": ""}]) for _, name in task.items]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="FER2013 (fer2013-images.tar.gz)")
    parser.add_argument("--photos", type=int, default=20_000)
    parser.add_argument("--prefix", type=int, default=300, help="photos timed per configuration")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--memory-sizes", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--sim-inputs", type=int, default=1_000_000)
    parser.add_argument("--sim-workers", type=int, default=200)
    parser.add_argument("--sim-processes", type=int, default=4)
    parser.add_argument("--parts", nargs="+", default=["throughput", "memory", "simulation"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULT))
    parser.add_argument(
        "--memory-child", nargs=2, metavar=("MODE", "COUNT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child[0], int(args.memory_child[1]))))
        return 0
    previous = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    record = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "when": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
    }
    if "throughput" in args.parts:
        if not args.data:
            parser.error("--data is needed to build the collection")
        folder = build_collection(args.data, args.photos, args.seed)
        record["collection"] = {
            "photos": args.photos, "folder": str(folder).replace(str(Path.home()), "~"),
            "scenes": "640x480 scikit-image/scikit-learn photos with 1-3 FER2013 Training faces "
                      "of 96-200 px (ferlab.vision.scenes.place_faces), JPEG quality 90",
            "seed": args.seed,
        }  # fmt: skip
        record["throughput"] = throughput(folder, args.prefix, args.rounds)
        record["throughput"]["note"] = (
            f"a fixed prefix of {args.prefix} photos of the {args.photos:,}-photo collection per "
            "configuration, the configurations interleaved over the rounds, on a 2-core machine "
            "shared with other jobs (the load average is given): ratios of the best round of each "
            "(and of the medians), the order of the configurations rotated every round"
        )
    if "memory" in args.parts:
        record["driver_memory"] = memory(args.memory_sizes)
    if "simulation" in args.parts:
        record["simulation"] = simulate(args.sim_inputs, args.sim_workers, args.sim_processes,
                                        block=max(1, args.sim_inputs // 10))  # fmt: skip
    merged = {**previous, **record}
    print(json.dumps(record, indent=1))
    write_record(args.out, merged, stamp=False)  # each part names its own command
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
