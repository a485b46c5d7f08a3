"""``ferlab train``: train a fully connected net from a TOML config."""

from __future__ import annotations

import argparse
import json

from ferlab.cli.common import (
    add_config_arguments,
    add_data_arguments,
    add_out_arguments,
    add_quiet_argument,
    output_folder,
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a fully connected net from a config", description=__doc__
    )
    add_config_arguments(parser)
    add_data_arguments(parser)
    add_out_arguments(parser, what="the run (model, history, plots, summary)", default=None)
    parser.add_argument(
        "--resume", metavar="CHECKPOINT", help="continue from a checkpoint file (into --out)"
    )
    add_quiet_argument(parser)
    parser.set_defaults(func=run)


def printed_summary(summary: dict) -> dict:
    """The summary as printed: every accuracy as a percentage (``summary.json`` keeps fractions)."""
    from ferlab.evaluation.metrics import percent

    return {
        key: percent(value) if key.endswith("_accuracy") and isinstance(value, float) else value
        for key, value in summary.items()
    }


def run(args: argparse.Namespace) -> int:
    from ferlab.runs.fc import run_training
    from ferlab.settings.loading import load_config

    settings = load_config(args.config, args.overrides, args.data)
    with output_folder(args.out, force=args.force, resume=bool(args.resume)) as out:
        summary = run_training(
            settings,
            out,
            resume=args.resume,
            verbose=not args.quiet,
            strict=args.strict,
            use_cache=not args.no_cache,
        )
    print(json.dumps(printed_summary(summary), indent=2))
    test_keys = [
        k
        for k in summary
        if k.endswith("_accuracy") and k not in ("train_accuracy", "val_accuracy")
    ]
    for key in test_keys[:-1] if len(test_keys) > 1 else test_keys:
        print(f"{key.removesuffix('_accuracy').replace('_', ' ')} accuracy: {summary[key]:.2%}")
    print(f"run written to {args.out}")
    return 0
