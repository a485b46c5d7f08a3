"""Slow, idle and greedy clients against ``ferlab serve`` (issue 50): do ordinary photos still pass?

    python benchmarks/serve_slow_clients.py --seconds 20

Starts a real ``ferlab serve`` with its defaults for each case. One honest client (loopback
address 127.0.0.2) posts real 640x480 JPEG photos (``serve_load.photos``) over a keep-alive
connection, one after another, and asks ``/healthz`` once a second, while attackers run from
other loopback addresses (all of 127.0.0.0/8 is loopback, so each attacker can have its own
address, as clients on other machines would):

- ``slow uploads``: 64 clients, each from its own address, send the headers of a 5 MB upload,
  then 100 bytes every 2 s, and reconnect when answered (the attack of issue 50);
- ``slow uploads, one address``: the same 64 from a single address;
- ``fast start, then slow``: the same 64 from 64 addresses, each sending 512 KiB of its body at
  once before trickling (bodies held in memory, 32 MiB in all);
- ``slow headers``: 64 clients, each from its own address, send a request's headers a byte every
  2 s;
- ``idle``: 200 connections, each from its own address, that send nothing and reconnect when
  closed.

Reports, per case, the honest client's p95 latency beside the unloaded figure (their ratio;
the target is under 2), its answers by status (the target: all 200), ``/healthz``'s, the
attackers' answers by status, and the server's peak resident memory. Writes
``benchmarks/results/serve_slow_clients.json``. Run with ``PYTHONPATH=OTHER_CHECKOUT/src`` to
measure another version of the server (e.g. the one before issue 50), with its defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import http.client
import json
import os
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np

from harness import RESULTS, write_record
from serve_load import SERVE, MemoryWatch, free_port, photos, stop_server

RECORD = RESULTS / "serve_slow_clients.json"
HONEST = "127.0.0.2"
TARGET_RATIO = 2.0


def start_server(port: int) -> subprocess.Popen:
    """``ferlab serve`` with its defaults on 127.0.0.1:``port``, once /healthz answers."""
    process = subprocess.Popen(
        SERVE + ["--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
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


class Attack:
    """``count`` attacking connections from ``addresses`` (one each in turn), run on an asyncio
    loop in a thread. ``head`` is sent first, then ``piece`` every ``every`` seconds (nothing
    when ``piece`` is empty) until the server answers or closes; the attacker then reconnects
    after ``reconnect`` seconds. ``outcomes`` counts the answers' statuses ("closed": closed
    without an answer)."""

    def __init__(
        self,
        port: int,
        addresses: list[str],
        count: int,
        head: bytes,
        piece: bytes,
        every: float,
        reconnect: float,
    ) -> None:
        self.port, self.addresses, self.count = port, addresses, count
        self.head, self.piece, self.every, self.reconnect = head, piece, every, reconnect
        self.outcomes: Counter[str] = Counter()
        self.open = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        tasks = [
            asyncio.create_task(self._one(self.addresses[k % len(self.addresses)]))
            for k in range(self.count)
        ]
        while not self._stop.is_set():
            await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _one(self, address: str) -> None:
        while not self._stop.is_set():
            writer = None
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", self.port, local_addr=(address, 0)
                )
                self.open += 1
                writer.write(self.head)
                answer = b""
                while True:
                    try:
                        answer = await asyncio.wait_for(reader.read(65536), self.every)
                        break
                    except TimeoutError:
                        if self.piece:
                            writer.write(self.piece)
                status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else ""
                self.outcomes[status or "closed"] += 1
            except (OSError, IndexError) as exc:
                self.outcomes[type(exc).__name__] += 1
            finally:
                if writer is not None:
                    self.open -= 1
                    writer.close()
            await asyncio.sleep(self.reconnect)

    def __enter__(self) -> Attack:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


def timed(connection: http.client.HTTPConnection, method: str, path: str, body=None) -> tuple:
    """One request: (status or error name, seconds)."""
    begun = time.perf_counter()
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "image/jpeg"})
        response = connection.getresponse()
        response.read()
        outcome: int | str = response.status
        if response.getheader("Connection", "").lower() == "close":
            connection.close()
    except (OSError, http.client.HTTPException) as exc:
        outcome = type(exc).__name__
        connection.close()
    return outcome, time.perf_counter() - begun


def honest_client(port: int, images: list, seconds: float) -> tuple[list, list]:
    """Photos posted one after another for ``seconds`` from 127.0.0.2 over one keep-alive
    connection, and /healthz once a second over another: their (status, seconds) lists."""
    photo, health = (
        http.client.HTTPConnection("127.0.0.1", port, timeout=60, source_address=(HONEST, 0))
        for _ in range(2)
    )
    records, checks = [], []
    until = time.monotonic() + seconds
    next_check = time.monotonic()
    while time.monotonic() < until:
        records.append(timed(photo, "POST", "/v1/analyze", images[len(records) % len(images)][0]))
        if time.monotonic() >= next_check:
            checks.append(timed(health, "GET", "/healthz"))
            next_check += 1.0
    photo.close()
    health.close()
    return records, checks


def latency(records: list) -> dict:
    ok = np.array([s for outcome, s in records if outcome == 200]) * 1000.0
    return {
        name: round(float(np.percentile(ok, q)), 1) if ok.size else None
        for name, q in (("p50", 50), ("p95", 95), ("max", 100))
    }


def counts(records: list) -> dict:
    return dict(sorted(Counter(str(outcome) for outcome, _ in records).items()))


def upload_head() -> bytes:
    return (
        b"POST /v1/analyze HTTP/1.1\r\nHost: bench\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: 5000000\r\n\r\n"
    )


def attacks() -> dict[str, dict]:
    """The attacks by name: Attack's arguments but the port."""
    spread = [f"127.0.{1 + k // 250}.{1 + k % 250}" for k in range(200)]
    return {
        "slow uploads: 64 clients, 64 addresses": dict(
            addresses=spread[:64], count=64, head=upload_head(), piece=b"\xff" * 100, every=2.0
        ),
        "slow uploads: 64 clients, one address": dict(
            addresses=["127.0.0.3"], count=64, head=upload_head(), piece=b"\xff" * 100, every=2.0
        ),
        "fast start, then slow: 64 clients, 64 addresses, 512 KiB each": dict(
            addresses=spread[:64],
            count=64,
            head=upload_head() + b"\xff" * 512 * 1024,
            piece=b"\xff" * 100,
            every=2.0,
        ),
        "slow headers: 64 clients, 64 addresses": dict(
            addresses=spread[:64],
            count=64,
            head=b"POST /v1/analyze HTTP/1.1\r\n",
            piece=b"X",
            every=2.0,
        ),
        "idle: 200 connections, 200 addresses": dict(
            addresses=spread, count=200, head=b"", piece=b"", every=3600.0
        ),
    }


def run_case(
    name: str, attack: dict | None, images: list, seconds: float, ramp: float, reconnect: float
) -> dict:
    """One fresh server: the attack (if any) runs ``ramp`` seconds, then the honest client
    runs ``seconds`` beside it."""
    port = free_port()
    process = start_server(port)
    try:
        honest_client(port, images, 2.0)  # warm up
        with MemoryWatch(process.pid) as memory:
            if attack is None:
                records, checks = honest_client(port, images, seconds)
                outcomes, open_ = {}, 0
            else:
                with Attack(port, **attack, reconnect=reconnect) as attacker:
                    time.sleep(ramp)
                    open_ = attacker.open
                    records, checks = honest_client(port, images, seconds)
                    outcomes = dict(sorted(attacker.outcomes.items()))
        result = {
            "case": name,
            "seconds": seconds,
            "honest_latency_ms": latency(records),
            "honest_by_status": counts(records),
            "healthz_by_status": counts(checks),
            "attackers_open_when_measuring_began": open_,
            "attackers_by_status": outcomes,
            "peak_rss_mb": round(memory.peak_kib / 1024, 1),
        }
    finally:
        stop_server(process)
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="honest client's time per case")
    parser.add_argument("--ramp", type=float, default=4.0, help="seconds an attack runs first")
    parser.add_argument(
        "--reconnect", type=float, default=0.5, help="seconds an attacker waits to reconnect"
    )
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--note", default="", help="conditions to record (other load, version)")
    parser.add_argument("--out", type=Path, default=RECORD)
    args = parser.parse_args()
    if not 0 < args.seconds <= 120:
        parser.error("--seconds must be in (0, 120]")

    images = photos(args.photos)
    started = datetime.datetime.now(datetime.UTC)
    load = os.getloadavg()[0]
    unloaded = run_case("unloaded", None, images, args.seconds, args.ramp, args.reconnect)
    cases = [unloaded]
    for name, attack in attacks().items():
        cases.append(run_case(name, attack, images, args.seconds, args.ramp, args.reconnect))
    base = unloaded["honest_latency_ms"]["p95"]
    print(f"\n{'case':62} {'p95 ms':>8} {'ratio':>6}  honest      attackers")
    for case in cases:
        p95 = case["honest_latency_ms"]["p95"]
        case["p95_ratio_to_unloaded"] = round(p95 / base, 2) if p95 and base else None
        ok = case["honest_by_status"].get("200", 0) == sum(case["honest_by_status"].values())
        case["target_met"] = bool(
            ok
            and case["p95_ratio_to_unloaded"] is not None
            and case["p95_ratio_to_unloaded"] < TARGET_RATIO
            and set(case["healthz_by_status"]) == {"200"}
        )
        print(
            f"{case['case']:62} {p95 or float('nan'):8.1f} {case['p95_ratio_to_unloaded'] or 0:6.2f}"
            f"  {case['honest_by_status']}  {case['attackers_by_status']}"
        )
    record = {
        "measured_at_utc": started.strftime("%Y-%m-%d %H:%M"),
        "load_average_1min_before": round(load, 2),
        "note": args.note,
        "server": "ferlab serve with its defaults, one worker, a fresh process per case",
        "honest_client": f"{HONEST}: 640x480 JPEG photos one after another over one keep-alive "
        "connection, /healthz once a second over another",
        "target": f"every honest photo 200 with p95 under {TARGET_RATIO:g}x the unloaded p95, "
        "/healthz 200",
        "cases": cases,
    }
    write_record(args.out, record)  # with the machine (its cpus, python, ...) and command
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
