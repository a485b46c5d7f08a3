"""``ferlab predict``: the most likely class of every image in a folder."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="predict the class of every image in a folder", description=__doc__
    )
    parser.add_argument(
        "folder", metavar="IMAGE_FOLDER", help="folder of images (any size or mode)"
    )
    parser.add_argument("--model", required=True, metavar="MODEL", help="model file to use")
    parser.add_argument("--csv", metavar="OUT", help="also write the predictions to this CSV file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ferlab.predict import predict_folder, write_predictions_csv

    predictions = predict_folder(args.folder, args.model)
    width = max((len(p.file) for p in predictions), default=0)
    for p in predictions:
        print(f"{p.file:<{width}}  {p.class_name:<10}  {p.probability:.3f}")
    if args.csv:
        write_predictions_csv(predictions, args.csv)
        print(f"{len(predictions)} prediction(s) written to {args.csv}")
    return 0
