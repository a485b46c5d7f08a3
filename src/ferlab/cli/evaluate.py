"""``ferlab evaluate``: a model's confusion matrices and per-class measures on a data split."""

from __future__ import annotations

import argparse
from pathlib import Path

from ferlab.cli.common import add_data_arguments


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="evaluate a model on a data split (the report's measures)",
        description=__doc__,
    )  # fmt: skip
    parser.add_argument("--model", required=True, metavar="MODEL", help="model file to evaluate")
    parser.add_argument(
        "--split",
        required=True,
        metavar="SPLIT",
        help="public or private (FER2013), test (digits, CIFAR-10), or val: the validation "
        "part held out of training, rebuilt from the model file",
    )
    add_data_arguments(parser)
    parser.add_argument(
        "--dataset", help="data set name, for model files that do not record it (e.g. fer2013)"
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="where to write report.json, report.md and confusion.png "
        "(default: eval-SPLIT next to the model)",
    )
    parser.add_argument(
        "--format",
        choices=("text", "markdown", "json"),
        default="text",
        help="how to print the report (default: text)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ferlab.evaluation import evaluate_split
    from ferlab.models import load_model

    classifier = load_model(args.model)
    out_dir = Path(args.out) if args.out else Path(args.model).parent / f"eval-{args.split}"
    report = evaluate_split(
        classifier,
        args.data,
        args.split,
        dataset=args.dataset,
        out_dir=out_dir,
        strict=args.strict,
        use_cache=not args.no_cache,
    )
    print_report(report, args.format, out_dir)
    return 0


def print_report(report, output_format: str, out_dir: Path) -> None:
    """Print an evaluation report as text, Markdown or JSON, and say where its files went."""
    printers = {"text": report.to_text, "markdown": report.to_markdown, "json": report.to_json}
    print(printers[output_format](), end="")
    if output_format != "json":
        print(f"\nreport written to {out_dir}/ (report.json, report.md, confusion.png)")
