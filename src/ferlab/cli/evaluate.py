"""``ferlab evaluate``: a model's confusion matrices and per-class measures on a data split.

Any model file works (fully connected ``.npz``, CNN ``.safetensors``, ``.onnx``). Without
``--data``, the data path recorded in the model's run folder (``config.json``) is used.

With ``--photos DIR`` (class folders, or a CSV of path,label[,x,y,w,h]), the model is measured on
your own labelled photos instead, each framed as ``predict`` frames it (ferlab.photos).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ferlab.cli.common import add_data_arguments, output_folder, recorded_data_path
from ferlab.errors import ConfigError
from ferlab.vision.detect import DEFAULT_DETECTOR, DETECTORS

TTA_CHOICES = ("none", "flip", "tencrop")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="evaluate a model on a data split (the report's measures)",
        description=__doc__,
    )  # fmt: skip
    parser.add_argument(
        "--model", required=True, metavar="MODEL", help="model file to evaluate, or 'shipped'"
    )
    parser.add_argument(
        "--split",
        metavar="SPLIT",
        help="public or private (FER2013), test (digits, CIFAR-10), or val: the validation "
        "part held out of training, rebuilt from the model file",
    )
    parser.add_argument(
        "--photos",
        metavar="DIR",
        help="your own labelled photos instead of a split: DIR/<label>/*.jpg or a "
        "path,label[,x,y,w,h] CSV",
    )
    parser.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="LABEL=CLASS",
        help="with --photos: read a photo label as one of the model's classes (repeatable)",
    )
    parser.add_argument(
        "--detector",
        default=DEFAULT_DETECTOR,
        choices=DETECTORS,
        help="with --photos: the face detector, as predict's",
    )
    add_data_arguments(parser)
    parser.add_argument(
        "--dataset", help="data set name, for model files that do not record it (e.g. fer2013)"
    )
    parser.add_argument(
        "--tta",
        choices=TTA_CHOICES,
        help="test-time augmentation of a CNN: flip (mirror) or tencrop (corners, centre, "
        "mirrored); default none, or flip (predict's) with --photos",
    )
    parser.add_argument("--device", help="a CNN's device: cpu, cuda or cuda:N (default: auto)")
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="folder for report.json, report.md and confusion.png "
        "(default: eval-SPLIT[-TTA] next to the model, whose report each run replaces)",
    )
    parser.add_argument("--force", action="store_true", help="write into --out even if not empty")
    parser.add_argument(
        "--format", choices=("text", "markdown", "json"), default="text", help="printed report"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ferlab.evaluation.scoring import REPORT_FILES, evaluate_split
    from ferlab.inference.models import load_model, with_options

    if args.photos:
        return run_photos(args)
    if not args.split:
        raise ConfigError("give --split SPLIT (a data split) or --photos DIR (your own photos)")
    args.tta = args.tta or "none"
    classifier = with_options(load_model(args.model), tta=args.tta, device=args.device)
    suffix = "" if args.tta == "none" else f"-{args.tta}"
    out = Path(args.out) if args.out else Path(args.model).parent / f"eval-{args.split}{suffix}"
    data = args.data or recorded_data_path(args.model)
    # The default folder holds this command's own report, which a new run replaces; a folder
    # holding anything else (or one given with --out) needs --force.
    own = () if args.out else REPORT_FILES
    with output_folder(out, force=args.force, replaceable=own) as out_dir:
        report = evaluate_split(
            classifier,
            data,
            args.split,
            dataset=args.dataset,
            out_dir=out_dir,
            strict=args.strict,
            use_cache=not args.no_cache,
        )
    print_report(report, args.format, out_dir)
    return 0


def run_photos(args: argparse.Namespace) -> int:
    """``evaluate --photos``: the report on the user's photos, written to --out."""
    from ferlab.evaluation.scoring import REPORT_FILES
    from ferlab.photos.evaluate import PHOTO_FILES, evaluate_photos
    from ferlab.photos.sets import parse_mapping

    if args.split:
        raise ConfigError("give either --split or --photos, not both")
    tta = args.tta or "flip"
    out = Path(args.out) if args.out else Path(args.photos).expanduser().parent / "eval-photos"
    own = () if args.out else (*REPORT_FILES, *PHOTO_FILES)
    with output_folder(out, force=args.force, replaceable=own) as out_dir:
        result = evaluate_photos(
            args.photos, args.model, out_dir=out_dir, mapping=parse_mapping(args.map),
            detector=args.detector, tta=tta, verbose=not args.quiet,
        )  # fmt: skip
    print_report(result.report, args.format, out_dir)
    if args.format != "json":
        print(f"{result.summary()}; photos without a face: {out_dir}/no_face.txt; the most "
              f"confident mistakes: {out_dir}/mistakes.png")  # fmt: skip
    return 0


def print_report(report, output_format: str, out_dir: Path) -> None:
    """Print an evaluation report as text, Markdown or JSON, and say where its files went."""
    from ferlab.evaluation.scoring import REPORT_FILES

    printers = {"text": report.to_text, "markdown": report.to_markdown, "json": report.to_json}
    print(printers[output_format](), end="")
    if output_format != "json":
        print(f"\nreport written to {out_dir}/ ({', '.join(REPORT_FILES)})")
