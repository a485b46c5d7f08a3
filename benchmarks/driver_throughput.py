"""The search driver's own throughput as a study grows, on a journal file and on PostgreSQL.

Every trial is instant: its trial function reports 5 epochs and returns, in the driver's process
(``--workers 0``), so what is measured is the driver's bookkeeping and the storage: asking,
sampling, recording, pruning, counting. The rate is taken over each block of ``--block`` trials;
the ratio of the last block's rate to the first's shows whether the cost per trial grows with the
study. Both storages run in one invocation, one after the other, on the same machine.

    python benchmarks/driver_throughput.py --trials 14000 \
        --postgres postgresql://postgres@127.0.0.1:5432/test \
        --out benchmarks/results/driver_throughput.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna

from ferlab.search.cluster import InlineExecutor
from ferlab.search.space import parse_space
from ferlab.search.storage import open_storage
from ferlab.search.study import search
from harness import write_record

SPACE = Path(__file__).resolve().parents[1] / "src/ferlab/configs/spaces/fer2013_random.toml"
EPOCHS = 5


def instant_trials(stamps: list[float]):
    """A trial function that reports ``EPOCHS`` made-up accuracies and returns at once."""

    def trial_fn(config: dict, report) -> float:
        # A value that depends on the sampled settings, so that the median pruner prunes some.
        value = 0.3 + 0.2 * (config["solver"]["lr"] * 1e4 % 1.0)
        try:
            for epoch in range(1, EPOCHS + 1):
                report(epoch, value * epoch / EPOCHS)  # raises TrialPruned to stop early
        finally:
            stamps.append(time.perf_counter())
        return value

    return trial_fn


def block_rates(stamps: list[float], start: float, block: int) -> list[dict]:
    """Trials per second over each block of ``block`` finished trials."""
    rates, previous = [], start
    for end in range(block, len(stamps) + 1, block):
        now = stamps[end - 1]
        rates.append({"trials": end, "per_second": round(block / (now - previous), 1)})
        previous = now
    return rates


def count_statements() -> list[int]:
    """A one-item list counting every SQL statement any SQLAlchemy engine runs from now on."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    counter = [0]

    def count(*_args) -> None:
        counter[0] += 1

    event.listen(Engine, "before_cursor_execute", count)
    return counter


def run_one(storage: str, n_trials: int, block: int, pruner: str, statements: list[int]) -> dict:
    """Run ``n_trials`` instant trials in a new study on ``storage``; return the block rates."""
    space = parse_space(_space_raw(), str(SPACE))
    name = f"driver-throughput-{uuid.uuid4().hex[:8]}"
    stamps: list[float] = []
    started, statements_before = time.perf_counter(), statements[0]
    study = search(
        "random", space, name, storage, n_trials, InlineExecutor(),
        pruner=pruner, trial_fn=instant_trials(stamps), progress=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    sql_per_trial = (statements[0] - statements_before) / n_trials
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    rates = block_rates(stamps, started, block)
    first, last = rates[0]["per_second"], rates[-1]["per_second"]
    result = {
        "trials": n_trials,
        "seconds": round(seconds, 1),
        "overall_per_second": round(n_trials / seconds, 1),
        "states": {s: states.count(s) for s in sorted(set(states))},
        "by_block": rates,
        "first_block_per_second": first,
        "last_block_per_second": last,
        "last_over_first": round(last / first, 3),
    }
    if "://" in storage:
        result["sql_statements_per_trial"] = round(sql_per_trial, 1)
    if "://" in storage:
        optuna.delete_study(study_name=name, storage=open_storage(storage))
    return result


def _space_raw() -> dict:
    from ferlab.settings.loading import read_toml

    raw = read_toml(SPACE)
    raw["config"]["data"]["path"] = "unused: the trials are instant"
    return raw


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=14000)
    parser.add_argument("--block", type=int, default=1000)
    parser.add_argument("--pruner", default="median", choices=("median", "none"))
    parser.add_argument("--postgres", help="a PostgreSQL URL; without it, the journal only")
    parser.add_argument("--out", help="JSON record to write")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs = {}
    statements = count_statements()
    with tempfile.TemporaryDirectory() as tmp:
        storages = {"journal": str(Path(tmp) / "study.journal")}
        if args.postgres:
            storages["postgresql"] = args.postgres
        for kind, storage in storages.items():
            runs[kind] = run_one(storage, args.trials, args.block, args.pruner, statements)
            r = runs[kind]
            print(
                f"{kind}: {args.trials} trials in {r['seconds']} s; first {args.block}: "
                f"{r['first_block_per_second']}/s, last {args.block}: "
                f"{r['last_block_per_second']}/s (x{r['last_over_first']})"
                + (
                    f"; {r['sql_statements_per_trial']} SQL statements per trial"
                    if "://" in storage
                    else ""
                ),
                flush=True,
            )
    record = {
        "when": dt.datetime.now().isoformat(timespec="seconds"),
        "trial": f"instant: {EPOCHS} reported epochs, run in the driver's process",
        "pruner": args.pruner,
        "space": SPACE.relative_to(SPACE.parents[2]).as_posix(),
        "runs": runs,
    }
    if args.out:
        write_record(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
