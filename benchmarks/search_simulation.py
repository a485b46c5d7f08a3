"""The original report's scale, simulated: 14,000 trials over 200 workers on Dask and PostgreSQL.

The report ran about 14,000 random-search trials on 200 HTCondor machines. Here 200 simulated
workers (threads of a few Dask worker processes, on a real Dask scheduler) run trials that sleep
for a random time, report their epochs, and crash or hang at given rates; the study lives in
PostgreSQL, as it would on a cluster. The run checks the rules and prints the wall time against
the ideal (the trials' summed durations over the workers):

- exactly ``--trials`` trials finish (complete or pruned), and no trial finishes twice: a
  crashed or hung trial and its retry never both finish;
- every crashed trial (an exception) and every hung one (no result after ``--trial-timeout``)
  is failed and queued again once; a retry that fails too stays failed.

    python benchmarks/search_simulation.py --postgres postgresql://postgres@127.0.0.1:5432/test \
        --out benchmarks/results/search_simulation.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ferlab.search.cluster import DaskExecutor
from ferlab.search.space import parse_space
from ferlab.search.storage import open_storage
from ferlab.search.study import search
from harness import stamped, write_record

SPACE = Path(__file__).resolve().parents[1] / "src/ferlab/configs/spaces/fer2013_random.toml"
CRASH = "simulated crash"


@dataclass(frozen=True)
class SimulatedTrial:
    """Sleeps about ``mean_s`` over ``epochs`` reported epochs; crashes or hangs at given rates."""

    mean_s: float
    epochs: int
    crash_rate: float
    hang_rate: float
    hang_s: float

    def __call__(self, config: dict, report) -> float:
        fate = random.Random()  # each attempt, a retry included, draws its own fate
        duration = fate.uniform(0.5, 1.5) * self.mean_s
        roll = fate.random()
        value = 0.3 + 0.2 * (config["solver"]["lr"] * 1e4 % 1.0)
        for epoch in range(1, self.epochs + 1):
            time.sleep(duration / self.epochs)
            if epoch == 2 and roll < self.crash_rate:
                raise RuntimeError(CRASH)
            if epoch == 2 and roll < self.crash_rate + self.hang_rate:
                time.sleep(self.hang_s)  # stuck: the driver gives up after its trial timeout
            report(epoch, value * epoch / self.epochs)
        return value


def check_rules(study: optuna.Study, n_trials: int) -> dict:
    """Check the outcome against the rules (raises AssertionError); return the counts."""
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state for t in trials)
    finished = states[TrialState.COMPLETE] + states[TrialState.PRUNED]
    assert finished == n_trials, f"{finished} trials finished, not {n_trials}"
    assert states[TrialState.RUNNING] == 0, f"{states[TrialState.RUNNING]} trials still running"
    retries: dict[int, list] = {}
    for t in trials:
        if "retry_of" in t.user_attrs:
            retries.setdefault(t.user_attrs["retry_of"], []).append(t)
    crashed = hung = 0
    for t in trials:
        if t.state != TrialState.FAIL:
            assert t.number not in retries, f"trial {t.number} did not fail but was retried"
            continue
        error = t.user_attrs.get("error", "")
        crashed += CRASH in error
        hung += "no result after" in error
        again = retries.get(t.number, [])
        if "retry_of" in t.user_attrs:
            assert not again, f"trial {t.number}, a retry, was retried again"
        else:
            assert len(again) == 1, f"failed trial {t.number} was retried {len(again)} times"
            assert again[0].params == t.params
    for original, again in retries.items():
        assert len(again) == 1, f"trial {original} has {len(again)} retries"
    return {
        "states": {s.name: n for s, n in sorted(states.items(), key=lambda i: i[0].name)},
        "crashed": crashed,
        "hung": hung,
        "retried": len(retries),
        "failed_retries": sum(
            t.state == TrialState.FAIL and "retry_of" in t.user_attrs for t in trials
        ),
        "retries_finished": sum(
            a[0].state in (TrialState.COMPLETE, TrialState.PRUNED) for a in retries.values()
        ),
    }


def busy_seconds(study: optuna.Study) -> float:
    """Worker time the trials took (start to completion, every trial)."""
    return sum(
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in study.get_trials(deepcopy=False)
        if t.datetime_complete and t.datetime_start
    )


def simulate(
    postgres: str, *, n_trials: int = 14000, workers: int = 200, processes: int = 4,
    mean_s: float = 4.0, epochs: int = 5, crash_rate: float = 0.01, hang_rate: float = 0.005,
    hang_s: float = 120.0, trial_timeout: float = 60.0, progress: bool = True,
) -> dict:  # fmt: skip
    """Run the simulation in a new study (deleted afterwards); return its record."""
    import dask
    from distributed import Client, LocalCluster

    from ferlab.settings.loading import read_toml

    raw = read_toml(SPACE)
    raw["config"]["data"]["path"] = "unused: the trials are simulated"
    space = parse_space(raw, str(SPACE))
    trial_fn = SimulatedTrial(mean_s, epochs, crash_rate, hang_rate, hang_s)
    name = f"simulation-{uuid.uuid4().hex[:8]}"
    # As ferlab's own clusters: a lost task is failed and retried by the driver, not re-run.
    dask.config.set({"distributed.scheduler.allowed-failures": 0})
    cluster = LocalCluster(
        n_workers=processes, threads_per_worker=workers // processes, processes=True,
        dashboard_address=None, silence_logs=logging.ERROR,
    )  # fmt: skip
    try:
        with Client(cluster) as client:
            executor = DaskExecutor(client, workers)
            started = time.perf_counter()
            study = search("random", space, name, postgres, n_trials, executor,
                           trial_fn=trial_fn, progress=progress,
                           trial_timeout=trial_timeout)  # fmt: skip
            wall = time.perf_counter() - started
        checks = check_rules(study, n_trials)
        ideal = busy_seconds(study) / workers
    finally:
        cluster.close()
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=open_storage(postgres))
    return {
        "trials": n_trials,
        "workers": workers,
        "worker_processes": processes,
        "trial": {
            "mean_seconds": mean_s,
            "epochs": epochs,
            "crash_rate": crash_rate,
            "hang_rate": hang_rate,
            "hang_seconds": hang_s,
            "trial_timeout": trial_timeout,
        },  # fmt: skip
        "wall_seconds": round(wall, 1),
        "ideal_seconds": round(ideal, 1),
        "wall_over_ideal": round(wall / ideal, 2),
        "finished_per_second": round(n_trials / wall, 1),
        **checks,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", required=True, help="PostgreSQL URL of the study")
    parser.add_argument("--trials", type=int, default=14000)
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--processes", type=int, default=4, help="Dask worker processes")
    parser.add_argument("--mean-seconds", type=float, default=4.0)
    parser.add_argument("--out", help="JSON record to write")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    record = simulate(args.postgres, n_trials=args.trials, workers=args.workers,
                      processes=args.processes, mean_s=args.mean_seconds)  # fmt: skip
    record = stamped({"when": dt.datetime.now().isoformat(timespec="seconds"), **record})
    print(json.dumps(record, indent=1))
    if args.out:
        write_record(args.out, record, stamp=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
