"""``ferlab compare``: cross-validate two learners on the same folds and test the difference."""

from __future__ import annotations

import argparse
from pathlib import Path

from ferlab.cli.common import add_out_arguments, add_quiet_argument, output_folder


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare two learners by paired tests on the same cross-validation folds",
        description=__doc__,
    )
    parser.add_argument("config_a", metavar="CONFIG_A", help="first learner's config (.toml)")
    parser.add_argument("config_b", metavar="CONFIG_B", help="second learner's config (.toml)")
    parser.add_argument("--data", metavar="PATH", help="data set location (overrides both configs)")
    parser.add_argument("--folds", type=int, default=5, metavar="K", help="folds")
    parser.add_argument("--repeats", type=int, default=1, metavar="R", help="repetitions of K-fold")
    parser.add_argument("--seed", type=int, default=0, help="seed of the folds and the learners")
    add_out_arguments(
        parser, what="compare.json, folds.json and fold_errors.png", default="runs/compare/A-vs-B"
    )
    for which in ("a", "b"):
        parser.add_argument(
            f"--set-{which}",
            dest=f"overrides_{which}",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=f"override a value of CONFIG_{which.upper()} (repeatable)",
        )
    parser.add_argument("--strict", action="store_true", help="stop at the first bad image")
    parser.add_argument("--no-cache", action="store_true", help="decode the data again")
    add_quiet_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ferlab.compare import load_learner, run_compare
    from ferlab.evaluation.metrics import percent

    learner_a = load_learner(args.config_a, args.overrides_a, args.data)
    learner_b = load_learner(args.config_b, args.overrides_b, args.data)
    default = Path("runs/compare") / f"{learner_a.name}-vs-{learner_b.name}"
    with output_folder(args.out or default, force=args.force) as out:
        record = run_compare(
            learner_a,
            learner_b,
            folds=args.folds,
            repeats=args.repeats,
            seed=args.seed,
            out_dir=out,
            strict=args.strict,
            use_cache=not args.no_cache,
            verbose=not args.quiet,
        )
    for key in ("a", "b"):
        learner = record["learners"][key]
        errors = ", ".join(percent(e) for e in learner["errors"])
        print(f"{learner['name']} fold errors: {errors}")
    for name, test in record["tests"].items():
        print(
            f"{name.replace('_', ' ')}: statistic {test['statistic']:.4g}, "
            f"p = {test['p_value']:.4g}"
        )
    print()
    print(record["verdict"])
    print(f"\nrecord written to {out}/compare.json, box plot to {out}/fold_errors.png")
    return 0
