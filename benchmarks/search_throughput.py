"""Trials per hour of a random search with and without pruning, side by side on one machine.

Runs two `ferlab search random` drivers at the same time on the same SPACE and seed, one with
``--pruner median`` and one with ``--pruner none``, each with the same number of workers, stops
both after the same wall time (Ctrl-C: unfinished trials are failed and queued again) and counts
the finished trials of each study. Both share the machine's load, so the comparison is fair even
on a busy machine; absolute rates depend on it.

    python benchmarks/search_throughput.py configs/spaces/fer2013_random.toml \
        --data /work/shared/data/fer2013-images.tar.gz --minutes 12 --workers 1 \
        --study-dir /root/ferlab-runs/search/throughput \
        --out benchmarks/results/search_throughput.json
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ferlab.search.storage import open_storage, storage_spec

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
    args = parser.parse_args()

    ferlab = str(Path(sys.executable).parent / "ferlab")
    names = {"median": args.pruned_study, "none": args.unpruned_study}
    drivers = {}
    started = time.monotonic()
    for pruner in PRUNERS:
        command = [ferlab, "search", "random", args.space, "--trials", str(args.trials),
                   "--workers", str(args.workers), "--pruner", pruner, "--seed", str(args.seed),
                   "--study", names[pruner], "--study-dir", args.study_dir,
                   "--quiet"]  # fmt: skip
        if args.data:
            command += ["--data", args.data]
        Path(args.study_dir).mkdir(parents=True, exist_ok=True)
        log = open(Path(args.study_dir) / f"{names[pruner]}.log", "w")  # noqa: SIM115
        drivers[pruner] = subprocess.Popen(command, stdout=log, stderr=log)
    time.sleep(args.minutes * 60)
    for driver in drivers.values():
        driver.send_signal(signal.SIGINT)
    elapsed_h = (time.monotonic() - started) / 3600
    for driver in drivers.values():
        driver.wait(timeout=300)

    results = {"space": args.space, "seed": args.seed, "workers_each": args.workers,
               "wall_minutes": round(elapsed_h * 60, 2), "machine": platform.node(),
               "note": "both searches ran at the same time on the same machine"}  # fmt: skip
    for pruner in PRUNERS:
        name = names[pruner]
        study = optuna.load_study(
            study_name=name, storage=open_storage(storage_spec(None, name, args.study_dir))
        )
        finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
        complete = [t for t in finished if t.state == TrialState.COMPLETE]
        epochs = sum(len(t.intermediate_values) for t in finished)
        results[pruner] = {
            "study": name,
            "finished": len(finished),
            "pruned": len(finished) - len(complete),
            "trials_per_hour": round(len(finished) / elapsed_h, 1),
            "epochs_trained": epochs,
            "mean_epochs_per_trial": round(epochs / max(1, len(finished)), 2),
            "best_val_accuracy": max((t.value for t in complete), default=None),
        }
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
