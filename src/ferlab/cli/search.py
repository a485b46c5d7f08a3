"""``ferlab search``: random, TPE and sequential searches; report, resume and retrain."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ferlab.cli.common import (
    add_out_arguments,
    add_quiet_argument,
    add_set_argument,
    output_folder,
)
from ferlab.evaluation.metrics import percent

PRUNER_CHOICES = ("median", "hyperband", "none")


def _add_study_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--study",
        required=required,
        metavar="NAME",
        help="study name (default for a new search: SPACE's name and the search kind)",
    )
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="postgresql://... for many machines, or a journal file path "
        "(default: STUDY_DIR/NAME/study.journal)",
    )
    parser.add_argument("--study-dir", metavar="DIR",
                        help="folder of study folders (default: runs/search)")  # fmt: skip


def _add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        metavar="K",
        help="local worker processes, one BLAS thread each (0: run in this process)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler", metavar="tcp://HOST:PORT", help="use an existing Dask cluster"
    )
    where.add_argument(
        "--cluster",
        choices=("htcondor", "slurm", "pbs"),
        help="start workers as batch jobs through dask-jobqueue",
    )
    parser.add_argument("--jobs", type=int, default=1, help="batch jobs to submit (with --cluster)")
    parser.add_argument(
        "--cores",
        type=int,
        default=1,
        help="cores per job = worker processes per job (with --cluster)",
    )
    parser.add_argument("--memory", default="4GB", help="memory per job (with --cluster)")
    parser.add_argument(
        "--walltime",
        metavar="HH:MM:SS",
        help="time limit per job (with --cluster slurm|pbs; default: dask-jobqueue's, 30 "
        "minutes); workers leave shortly before it and a new job takes over",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")  # fmt: skip


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "space",
        metavar="SPACE",
        help="TOML file of ranges, or a shipped one (spaces/digits_demo; see ferlab configs)",
    )
    parser.add_argument(
        "--pruner",
        choices=PRUNER_CHOICES,
        default="median",
        help="stop hopeless trials early from their per-epoch validation accuracy",
    )
    parser.add_argument("--seed", type=int, help="sampler seed (default: the SPACE's search.seed)")
    parser.add_argument("--data", metavar="PATH", help="data set location (overrides the SPACE)")
    add_set_argument(parser)
    _add_study_arguments(parser, required=False)
    _add_executor_arguments(parser)  # fmt: skip


def register(subparsers) -> None:
    parser = subparsers.add_parser("search", help="hyperparameter search with Optuna and Dask",
                                   description=__doc__)  # fmt: skip
    commands = parser.add_subparsers(dest="search_command", metavar="KIND", required=True)

    for kind, text in (("random", "random search"), ("tpe", "model-based search (Optuna's TPE)")):
        sub = commands.add_parser(kind, help=text, description=text)
        _add_run_arguments(sub)
        sub.add_argument("--trials", type=int, required=True, metavar="N",
                         help="finished trials in total, over all workers and re-runs")  # fmt: skip
        sub.add_argument("--timeout", type=float, metavar="SECONDS",
                         help="start no trial after this long; running trials finish")  # fmt: skip
        sub.add_argument("--trial-timeout", type=float, metavar="SECONDS",
                         help="fail (and retry once) a trial with no result after this long")  # fmt: skip
        sub.set_defaults(func=run_search, kind=kind)

    sub = commands.add_parser(
        "sequential",
        help="one hyperparameter group at a time",
        description="Search each group in turn, the rest held at the best so far.",
    )
    _add_run_arguments(sub)
    sub.add_argument(
        "--order",
        default="lr,dropout,reg,topology",
        help="comma-separated [sequential] groups of the SPACE",
    )
    sub.add_argument("--trials-per-step", type=int, required=True, metavar="N")  # fmt: skip
    sub.set_defaults(func=run_sequential)

    sub = commands.add_parser("report", help="best trial, top-10 table, plots (PNG), CSV")
    _add_study_arguments(sub, required=True)
    sub.add_argument(
        "--out", metavar="DIR", help="where to write (default: the study's folder/report)"
    )
    sub.add_argument("--export", choices=("csv",), help="also write every trial to trials.csv")
    sub.set_defaults(func=run_report)

    sub = commands.add_parser("resume", help="finish an interrupted study with its stored settings")
    _add_study_arguments(sub, required=True)
    _add_executor_arguments(sub)
    sub.set_defaults(func=run_resume)

    sub = commands.add_parser("retrain", help="train the best configuration and evaluate it")
    _add_study_arguments(sub, required=True)
    add_out_arguments(sub, what="the run and its test-split reports", default=None)
    add_quiet_argument(sub)
    sub.set_defaults(func=run_retrain)


def _storage(args: argparse.Namespace, study: str) -> str:
    from ferlab.search.storage import storage_spec

    return storage_spec(args.storage, study, args.study_dir)


def _load_space(args: argparse.Namespace):
    from ferlab.search.space import parse_space
    from ferlab.settings.loading import apply_overrides, read_toml

    raw = read_toml(args.space)
    config = raw.setdefault("config", {})
    if isinstance(config, dict):
        raw["config"] = config = apply_overrides(config, args.overrides)
        if args.data is not None:
            config.setdefault("data", {})["path"] = str(Path(args.data).expanduser().resolve())
    space = parse_space(raw, args.space)
    _check_data(space.config)
    return space


def _check_data(config: dict) -> None:
    """Fail before starting workers when the data cannot be loaded (and warm its cache)."""
    from ferlab.data import load_dataset

    data = config["data"]
    load_dataset(data["dataset"], data["path"])


def _executor(args: argparse.Namespace):
    from ferlab.search.cluster import open_executor

    return open_executor(args.workers, scheduler=args.scheduler, cluster=args.cluster,
                         jobs=args.jobs, cores=args.cores, memory=args.memory,
                         walltime=args.walltime)  # fmt: skip


def _print_outcome(study) -> None:
    from ferlab.search.report import best_text, summary_counts

    counts = summary_counts(study)
    print(f"study {study.study_name}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    print(best_text(study))


def _default_name(args: argparse.Namespace, kind: str) -> str:
    return args.study or f"{Path(args.space).stem}-{kind}"


def run_search(args: argparse.Namespace) -> int:
    from ferlab.search.study import search

    space = _load_space(args)
    name = _default_name(args, args.kind)
    storage = _storage(args, name)
    with _resume_hint(name, args), _executor(args) as executor:
        study = search(args.kind, space, name, storage, args.trials, executor,
                       pruner=args.pruner, seed=args.seed, progress=not args.quiet,
                       timeout=args.timeout, trial_timeout=args.trial_timeout)  # fmt: skip
    _print_outcome(study)
    print(f"report: ferlab search report --study {name}{_where(args)}")
    return 0


@contextmanager
def _resume_hint(name: str, args: argparse.Namespace) -> Iterator[None]:
    """On Ctrl-C, say how to continue: every finished trial is already in the study."""
    try:
        yield
    except KeyboardInterrupt:
        print(f"\nferlab: search interrupted; finished trials are kept. Continue with: "
              f"ferlab search resume --study {name}{_where(args)}", file=sys.stderr)  # fmt: skip
        raise


def _where(args: argparse.Namespace) -> str:
    if args.storage:
        return f" --storage {args.storage}"
    return f" --study-dir {args.study_dir}" if args.study_dir else ""


def _print_steps(results) -> None:
    from dataclasses import asdict

    from ferlab.search.report import steps_text

    print(steps_text([asdict(r) for r in results]))


def run_sequential(args: argparse.Namespace) -> int:
    from ferlab.search.study import sequential

    space = _load_space(args)
    name = _default_name(args, "sequential")
    order = [step.strip() for step in args.order.split(",") if step.strip()]
    with _resume_hint(name, args), _executor(args) as executor:
        results = sequential(space, name, _storage(args, name), order, args.trials_per_step,
                             executor, pruner=args.pruner, seed=args.seed,
                             progress=not args.quiet)  # fmt: skip
    _print_steps(results)
    return 0


def run_resume(args: argparse.Namespace) -> int:
    from ferlab.search.study import open_study, resume, study_meta

    storage = _storage(args, args.study)
    meta = study_meta(open_study(args.study, storage))
    if meta.get("mode") != "sequential-step":
        _check_data(json_config(meta))
    with _resume_hint(args.study, args), _executor(args) as executor:
        outcome = resume(args.study, storage, executor, progress=not args.quiet)
    if isinstance(outcome, list):
        _print_steps(outcome)
    else:
        _print_outcome(outcome)
    return 0


def json_config(meta: dict) -> dict:
    """The fixed training config stored with a study."""
    from ferlab.search.space import parse_space

    return parse_space(meta["space"], "stored SPACE").config


def run_report(args: argparse.Namespace) -> int:
    from ferlab.search.report import write_report
    from ferlab.search.storage import study_dir
    from ferlab.search.study import open_study

    study = open_study(args.study, _storage(args, args.study))
    out = Path(args.out) if args.out else study_dir(args.study, args.study_dir) / "report"
    print(write_report(study, out, csv_export=args.export == "csv"), end="")
    print(f"report written to {out}")
    return 0


def run_retrain(args: argparse.Namespace) -> int:
    from ferlab.search.report import retrain_best
    from ferlab.search.study import open_study

    study = open_study(args.study, _storage(args, args.study))
    with output_folder(args.out, force=args.force) as out:
        summary = retrain_best(study, out, verbose=not args.quiet)
    tests = {k: v for k, v in summary.items() if k.endswith("_accuracy") and "test" in k}
    print(f"validation accuracy: {percent(summary['val_accuracy'])}")
    for key, value in tests.items():
        print(f"{key.removesuffix('_accuracy').replace('_', ' ')} accuracy: {percent(value)}")
    print(f"run written to {out}")
    return 0
