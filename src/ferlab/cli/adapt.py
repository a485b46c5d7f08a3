"""``ferlab adapt``: fine-tune a model on your own labelled photos, with the test to know it helped.

How much to adapt (the photos' own input standardisation, that with the head alone or the whole
network retrained, or nothing) is chosen by cross-validation on your photos;
a nested k-fold paired test (corrected resampled t-test and Wilcoxon, as ``compare``'s) between
the original and the adapted model ends in a one-line verdict. Writes the adapted model (ONNX
for an ONNX model such as the shipped one, .safetensors for a CNN file), adapt.json and a model
card naming the parent model and the photos. Labels the model does not know are refused unless
mapped with --map or added as new classes with --new-classes (extend's transfer learning).
"""

from __future__ import annotations

import argparse

from ferlab.cli.common import add_out_arguments, output_folder
from ferlab.vision.detect import DEFAULT_DETECTOR, DETECTORS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "adapt",
        help="fine-tune a model on your own labelled photos (cross-validated, with a paired test)",
        description=__doc__,
    )
    parser.add_argument(
        "--photos",
        required=True,
        metavar="DIR",
        help="labelled photos: DIR/<label>/*.jpg or a path,label[,x,y,w,h] CSV",
    )
    parser.add_argument(
        "--model",
        default="shipped",
        metavar="MODEL",
        help="the model to adapt: 'shipped', a ferlab .onnx file or a CNN .safetensors file",
    )
    parser.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="LABEL=CLASS",
        help="read a photo label as one of the model's classes (repeatable)",
    )
    parser.add_argument(
        "--new-classes",
        default="",
        metavar="NAME[,NAME...]",
        help="photo labels to add to the model as new classes, e.g. contempt",
    )
    parser.add_argument("--folds", type=int, default=5, help="folds of the paired test (>= 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--detector",
        choices=DETECTORS,
        default=DEFAULT_DETECTOR,
        help="face detector, as predict's",
    )
    parser.add_argument(
        "--tta", choices=("none", "flip"), default="flip", help="test-time views, as predict's"
    )
    add_out_arguments(parser, what="the adapted model, adapt.json and its card", default=None)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ferlab.photos.adapt import adapt_photos
    from ferlab.photos.sets import parse_mapping

    new_classes = [name.strip() for name in args.new_classes.split(",") if name.strip()]
    with output_folder(args.out, force=args.force) as out_dir:
        record = adapt_photos(
            args.photos, args.model, out_dir=out_dir, mapping=parse_mapping(args.map),
            new_classes=new_classes, folds=args.folds, seed=args.seed, detector=args.detector,
            tta=args.tta, verbose=not args.quiet,
        )  # fmt: skip
    print(record["verdict"])
    print(f"chosen: {record['choice']['what']}; model written to {record['model_file']}")
    return 0
