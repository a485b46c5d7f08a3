"""``ferlab extend``: add classes to a trained model (grow the output layer, freeze, retrain)."""

from __future__ import annotations

import argparse

from ferlab.cli.common import (
    add_data_arguments,
    add_out_arguments,
    add_quiet_argument,
    output_folder,
    recorded_data_path,
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "extend",
        help="add new classes to a trained model by transfer learning or fine-tuning",
        description=__doc__,
    )
    parser.add_argument("--model", required=True, metavar="MODEL", help="trained model file")
    add_data_arguments(parser)
    parser.add_argument(
        "--new-classes",
        required=True,
        metavar="NAME[,NAME...]",
        help="class names of the data set to add, e.g. disgust",
    )
    parser.add_argument(
        "--freeze",
        choices=("all-but-last", "none"),
        default=None,
        help="all-but-last: train the output layer only (transfer learning); none: fine-tune all "
        "(default: all-but-last)",
    )
    add_out_arguments(parser, what="the extended model and extend.json", default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--optimizer", default=None)
    parser.add_argument("--patience", type=int, default=None, help="early-stopping patience")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--balance",
        action="store_true",
        help="oversample every class to the largest class's count (rare new classes)",
    )
    parser.add_argument(
        "--test-split", metavar="SPLIT", help="split to report on (default: the first test split)"
    )
    add_quiet_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ferlab.runs.extend import extend_model
    from ferlab.settings import ExtendSettings, validate_options

    new_classes = [name.strip() for name in args.new_classes.split(",") if name.strip()]
    # Options left out take the schema's defaults (ExtendSettings), stated there only.
    given = {name: getattr(args, name) for name in ExtendSettings.model_fields}
    settings = validate_options(
        ExtendSettings, **{name: value for name, value in given.items() if value is not None}
    )
    data = args.data or recorded_data_path(args.model)
    with output_folder(args.out, force=args.force) as out:
        report = extend_model(
            args.model,
            data,
            new_classes,
            out,
            settings,
            strict=args.strict,
            use_cache=not args.no_cache,
            verbose=not args.quiet,
        )
    before, after = report["before"], report["after"]
    split = report["test_split"]
    print(
        f"old-class accuracy on {split}: before {before['old_class_accuracy']:.2%}, "
        f"after {after['old_class_accuracy']:.2%}"
    )
    for name, recall in after["new_class_recall"].items():
        shown = "n/a (no samples)" if recall is None else f"{recall:.2%}"
        print(f"new class {name!r} recall on {split}: {shown}")
    print(
        f"accuracy on all {len(report['old_classes']) + len(report['new_classes'])} classes: "
        f"{after['overall_accuracy']:.2%}"
    )
    print(f"extended model written to {report['out']}, report to {report['report_path']}")
    return 0
