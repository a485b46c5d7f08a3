"""Trials per hour of a random search with and without pruning, side by side on one machine.

Runs two `ferlab search random` drivers at the same time on the same SPACE and seed, one with
``--pruner median`` and one with ``--pruner none``, each with the same number of workers, stops
both after the same wall time (Ctrl-C: unfinished trials are failed and queued again) and counts
the finished trials of each study. Both share the machine's load, so the comparison is fair even
on a busy machine; absolute rates depend on it.

    python benchmarks/search_throughput.py src/ferlab/configs/spaces/fer2013_random.toml \
        --data /work/shared/data/fer2013-images.tar.gz --minutes 12 --workers 1 \
        --study-dir /root/ferlab-runs/search/throughput \
        --out benchmarks/results/search_throughput.json

With ``--window START END`` it starts nothing and counts two studies that ran side by side
(finished trials whose completion time falls in the window), e.g. when the trials are slower
than a short run can measure and the drivers were stopped by hand.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ferlab.search.storage import open_storage, storage_spec
from harness import stamped, write_record

PRUNERS = ("median", "none")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("space")
    parser.add_argument("--data")
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=200, help="each study's target total")
    parser.add_argument("--pruned-study", default="throughput-median")
    parser.add_argument("--unpruned-study", default="throughput-none")
    parser.add_argument("--study-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--window",
        nargs=2,
        metavar=("START", "END"),
        help="only count two already-running studies between these ISO times (no new run)",
    )
    args = parser.parse_args()
    if args.window:
        start, end = (dt.datetime.fromisoformat(t) for t in args.window)
        return write_results(args, start, end)

    start = dt.datetime.now()
    ferlab = str(Path(sys.executable).parent / "ferlab")
    names = {"median": args.pruned_study, "none": args.unpruned_study}
    drivers = {}
    for pruner in PRUNERS:
        command = [ferlab, "search", "random", args.space, "--trials", str(args.trials),
                   "--workers", str(args.workers), "--pruner", pruner, "--seed", str(args.seed),
                   "--study", names[pruner], "--study-dir", args.study_dir,
                   "--quiet"]  # fmt: skip
        if args.data:
            command += ["--data", args.data]
        Path(args.study_dir).mkdir(parents=True, exist_ok=True)
        log = open(Path(args.study_dir) / f"{names[pruner]}.log", "w")  # noqa: SIM115
        # A shell's background job ignores SIGINT and children inherit that; restore it so the
        # stop below reaches the drivers.
        drivers[pruner] = subprocess.Popen(
            command, stdout=log, stderr=log, preexec_fn=_default_sigint
        )
    time.sleep(args.minutes * 60)
    for driver in drivers.values():
        driver.send_signal(signal.SIGINT)
    for driver in drivers.values():
        driver.wait(timeout=300)

    return write_results(args, start, dt.datetime.now())


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def write_results(args: argparse.Namespace, start: dt.datetime, end: dt.datetime) -> int:
    """Trials finished by each study between ``start`` and ``end`` (local times), per hour."""
    hours = (end - start).total_seconds() / 3600
    results = {"space": args.space, "seed": args.seed, "workers_each": args.workers,
               "window": [start.isoformat(timespec="seconds"), end.isoformat(timespec="seconds")],
               "wall_minutes": round(hours * 60, 2),
               "note": "both searches ran at the same time on the same machine"}  # fmt: skip
    names = {"median": args.pruned_study, "none": args.unpruned_study}
    for pruner in PRUNERS:
        name = names[pruner]
        study = optuna.load_study(
            study_name=name, storage=open_storage(storage_spec(None, name, args.study_dir))
        )
        finished = [
            t
            for t in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
            if start <= t.datetime_complete <= end
        ]
        complete = [t for t in finished if t.state == TrialState.COMPLETE]
        epochs = sum(len(t.intermediate_values) for t in finished)
        results[pruner] = {
            "study": name,
            "finished": len(finished),
            "pruned": len(finished) - len(complete),
            "trials_per_hour": round(len(finished) / hours, 2),
            "epochs_trained": epochs,
            "mean_epochs_per_trial": round(epochs / max(1, len(finished)), 2),
            "best_val_accuracy": max((t.value for t in complete), default=None),
        }
    results = stamped(results)
    write_record(args.out, results, stamp=False)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
