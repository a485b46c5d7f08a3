"""Load on ``ferlab serve`` over loopback: throughput, latency, errors and memory.

    python benchmarks/serve_load.py --seconds 20

Starts a real ``ferlab serve`` process for each case (1 worker, then 2), and N client threads that
post real 640x480 JPEG photos (scikit-image backgrounds with 0-3 pasted astronaut faces) for a
fixed time, each over its own keep-alive connection. Cases: ``--clients`` clients under the queue
limit, then ``--overload-clients`` clients against ``--overload-queue``, where the excess must get
503 + Retry-After, not failures. Reports requests/s, p50/p95/p99 latency of answered photos, counts
by status, and the server process tree's peak memory. Writes ``benchmarks/results/serve_load.json``.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from harness import RESULTS, write_record

RECORD = RESULTS / "serve_load.json"
SERVE = [sys.executable, "-c", "import sys; from ferlab.cli import main; sys.exit(main())", "serve"]
TARGET_P95_MS = 300.0


def photos(count: int, seed: int = 0) -> list[tuple[bytes, int]]:
    """``count`` JPEG photos 640x480 with 0-3 astronaut faces: a list of (bytes, faces placed)."""
    from skimage import data

    from ferlab.vision.recognizer import to_gray
    from ferlab.vision.scenes import background_photos, place_faces

    face = to_gray(data.astronaut())[40:190, 150:300]
    backgrounds = background_photos((640, 480))
    rng = np.random.default_rng(seed)
    made = []
    for i in range(count):
        faces = i % 4
        sizes = [int(s) for s in rng.integers(110, 170, size=faces)]
        scene = backgrounds[i % len(backgrounds)]
        if faces:
            scene, _ = place_faces(scene, np.stack([face] * faces), sizes, rng)
        buffer = io.BytesIO()
        Image.fromarray(scene).save(buffer, format="JPEG", quality=90)
        made.append((buffer.getvalue(), faces))
    return made


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(port: int, workers: int, queue: int) -> subprocess.Popen:
    """A ``ferlab serve`` process group on 127.0.0.1:``port``, answering /healthz (60 s at most)."""
    command = SERVE + ["--port", str(port), "--workers", str(workers), "--queue", str(queue)]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ferlab serve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return process
        except OSError:
            time.sleep(0.2)
    stop_server(process)
    raise TimeoutError("ferlab serve did not answer within 60 s")


def stop_server(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group; SIGKILL after 15 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(15)


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants (psutil when installed, else /proc)."""
    try:
        import psutil

        root = psutil.Process(pid)
        return [pid] + [child.pid for child in root.children(recursive=True)]
    except ImportError:
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(parent, []).append(int(entry.name))
        found, todo = [], [pid]
        while todo:
            current = todo.pop()
            found.append(current)
            todo.extend(children.get(current, []))
        return found
    except Exception:  # the process ended
        return []


def status_kib(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` memory field (VmRSS, VmHWM) in KiB; 0 when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemoryWatch:
    """Samples the summed resident memory of a process tree every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        self.pid = pid
        self.every = every
        self.peak_kib = 0
        self.hwm_kib: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = tree_pids(self.pid)
            self.peak_kib = max(self.peak_kib, sum(status_kib(p, "VmRSS") for p in pids))
            for p in pids:
                self.hwm_kib[p] = max(self.hwm_kib.get(p, 0), status_kib(p, "VmHWM"))
            self._stop.wait(self.every)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


def client(
    port: int,
    images: list[tuple[bytes, int]],
    start: int,
    until: float,
    record: list[tuple[int | str, float]],
    backoff: float | None,
) -> None:
    """Post photos in turn over one keep-alive connection until ``until`` (monotonic seconds);
    append (status or error name, seconds) to ``record``. After a 503 wait ``backoff`` seconds,
    or what the answer's Retry-After says when ``backoff`` is None."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    i = start
    retry_after = 1.0
    while time.monotonic() < until:
        body = images[i % len(images)][0]
        i += 1
        begun = time.perf_counter()
        try:
            connection.request(
                "POST", "/v1/analyze", body=body, headers={"Content-Type": "image/jpeg"}
            )
            response = connection.getresponse()
            response.read()
            outcome: int | str = response.status
            retry_after = float(response.getheader("Retry-After") or 1)
            if response.getheader("Connection", "").lower() == "close":
                connection.close()
        except (OSError, http.client.HTTPException) as exc:
            outcome = type(exc).__name__
            connection.close()
        record.append((outcome, time.perf_counter() - begun))
        if outcome == 503:
            wait = retry_after if backoff is None else backoff
            time.sleep(max(0.0, min(wait, until - time.monotonic())))
    connection.close()


def run_clients(
    port: int, images: list, clients: int, seconds: float, backoff: float | None
) -> list[tuple[int | str, float]]:
    """``clients`` threads posting for ``seconds``; every request's (outcome, seconds)."""
    until = time.monotonic() + seconds
    records: list[list] = [[] for _ in range(clients)]
    threads = [
        threading.Thread(target=client, args=(port, images, k * 3, until, records[k], backoff))
        for k in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    return [item for record in records for item in record]


def summary(records: list[tuple[int | str, float]], seconds: float) -> dict:
    """Requests/s, latency percentiles (ms) of the 200 answers, and counts by outcome."""
    ok = np.array([s for outcome, s in records if outcome == 200]) * 1000.0
    counts = Counter(str(outcome) for outcome, _ in records)
    latency = {
        name: round(float(np.percentile(ok, q)), 1) if ok.size else None
        for name, q in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))
    }
    refused = np.array([s for outcome, s in records if outcome == 503]) * 1000.0
    return {
        "requests": len(records),
        "ok_per_second": round(ok.size / seconds, 2),
        "requests_per_second": round(len(records) / seconds, 2),
        "latency_ms_ok": latency,
        "latency_ms_503_p95": round(float(np.percentile(refused, 95)), 1) if refused.size else None,
        "by_status": dict(sorted(counts.items())),
        "failures": sum(n for k, n in counts.items() if k not in ("200", "503")),
    }


def run_case(
    name: str,
    images: list,
    *,
    workers: int,
    queue: int,
    clients: int,
    seconds: float,
    backoff: float | None,
) -> dict:
    """One server, warmed up for 2 s, then measured for ``seconds``."""
    port = free_port()
    process = start_server(port, workers, queue)
    try:
        run_clients(port, images, min(clients, 2 * workers), 2.0, backoff)  # warm every worker
        load = os.getloadavg()[0]
        with MemoryWatch(process.pid) as memory:
            records = run_clients(port, images, clients, seconds, backoff)
        result = {
            "case": name,
            "workers": workers,
            "queue_per_worker": queue,
            "clients": clients,
            "seconds": seconds,
            "load_average_1min_before": round(load, 2),
            "load_average_1min_after": round(os.getloadavg()[0], 2),
            **summary(records, seconds),
            "peak_rss_mb_tree": round(memory.peak_kib / 1024, 1),
            "sum_of_peak_rss_mb_per_process": round(sum(memory.hwm_kib.values()) / 1024, 1),
            "processes": len(memory.hwm_kib),
        }
    finally:
        stop_server(process)
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time per case")
    parser.add_argument("--clients", type=int, default=4, help="clients under the queue limit")
    parser.add_argument("--queue", type=int, default=16, help="queue per worker, normal cases")
    parser.add_argument("--overload-clients", type=int, default=32)
    parser.add_argument("--overload-queue", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--backoff",
        type=float,
        default=None,
        help="seconds a client waits after a 503 (default: the answer's Retry-After)",
    )
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--note", default="", help="conditions to record (other load, ...)")
    parser.add_argument("--out", type=Path, default=RECORD)
    args = parser.parse_args()
    if not 0 < args.seconds <= 120 or not 1 <= args.clients <= 64:
        parser.error("--seconds must be in (0, 120] and --clients in [1, 64]")
    if not 1 <= args.overload_clients <= 128:
        parser.error("--overload-clients must be in [1, 128]")

    images = photos(args.photos)
    started = datetime.datetime.now(datetime.UTC)
    cases = []
    for workers in args.workers:
        cases.append(
            run_case(
                f"{args.clients} clients, {workers} worker(s)",
                images,
                workers=workers,
                queue=args.queue,
                clients=args.clients,
                seconds=args.seconds,
                backoff=args.backoff,
            )
        )
        cases.append(
            run_case(
                f"overload: {args.overload_clients} clients, {workers} worker(s), queue "
                f"{args.overload_queue}",
                images,
                workers=workers,
                queue=args.overload_queue,
                clients=args.overload_clients,
                seconds=args.seconds,
                backoff=args.backoff,
            )
        )
    normal = [c for c in cases if not c["case"].startswith("overload")]
    record = {
        "measured_at_utc": started.strftime("%Y-%m-%d %H:%M"),
        "note": args.note,
        "photos": {
            "count": len(images),
            "size": "640x480 JPEG quality 90",
            "faces_placed": [faces for _, faces in images],
            "mean_kib": round(sum(len(b) for b, _ in images) / len(images) / 1024, 1),
        },
        "client": "threads, one keep-alive http.client connection each, raw image/jpeg bodies; "
        + (
            f"after a 503 a client waits {args.backoff} s"
            if args.backoff is not None
            else "after a 503 a client waits what Retry-After says"
        ),
        "target": f"p95 < {TARGET_P95_MS:g} ms at {args.clients} clients",
        "target_met": {
            c["case"]: bool(c["latency_ms_ok"]["p95"] and c["latency_ms_ok"]["p95"] < TARGET_P95_MS)
            for c in normal
        },
        "cases": cases,
    }
    write_record(args.out, record)  # with the machine (its cpus, python, ...) and command
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
