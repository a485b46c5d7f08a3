"""``ferlab predict``: the emotion of every face in photos, folders and videos."""

from __future__ import annotations

import argparse
import contextlib
import sys

from ferlab.cli.common import output_folder
from ferlab.vision.detect import DEFAULT_DETECTOR, DETECTORS, MIN_FACE


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="emotions of the faces in photos, folders and videos",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image or video files, or folders of them"
    )
    parser.add_argument(
        "--model",
        metavar="MODEL",
        help="model file (.onnx, .npz, .safetensors), or 'shipped' (the default)",
    )
    parser.add_argument(
        "--detector",
        choices=DETECTORS,
        default=DEFAULT_DETECTOR,
        help="face detector by name; 'none' treats each image as one face crop (any model then works)",
    )
    parser.add_argument(
        "--min-face",
        type=float,
        default=MIN_FACE,
        metavar="F",
        help="smallest face searched, as a fraction of the shorter side (lower for group photos)",
    )
    parser.add_argument("--recursive", action="store_true", help="also look in sub-folders")
    parser.add_argument(
        "--every", type=int, default=25, metavar="N", help="video: analyse every N-th frame"
    )
    parser.add_argument(
        "--format", choices=("table", "csv", "json", "jsonl"), default="table", help="output format"
    )
    parser.add_argument(
        "--top-k", type=int, default=3, metavar="K", help="table: show the K most likely emotions"
    )
    parser.add_argument(
        "--annotate",
        metavar="DIR",
        help="write each image and video with boxes and labels drawn here",
    )
    parser.add_argument(
        "--force", action="store_true", help="write into --annotate even if it is not empty"
    )
    parser.add_argument(
        "--threads", type=int, default=1, metavar="N", help="threads for the model and the detector"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ferlab.errors import FerlabError
    from ferlab.vision.batch import analyze_inputs, collect_inputs, write_rows
    from ferlab.vision.recognizer import EmotionRecognizer

    if args.threads < 1:
        raise FerlabError(f"--threads must be >= 1, got {args.threads}")
    import cv2

    cv2.setNumThreads(args.threads)
    files = collect_inputs(args.inputs, recursive=args.recursive)
    recognizer = EmotionRecognizer(
        args.model, detector=args.detector, min_face=args.min_face, threads=args.threads
    )
    with contextlib.ExitStack() as stack:
        annotate = args.annotate and stack.enter_context(
            output_folder(args.annotate, force=args.force, option="--annotate")
        )
        rows = analyze_inputs(
            recognizer, files, every=args.every, top_k=args.top_k, annotate_dir=annotate or None
        )
        write_rows(rows, sys.stdout, args.format, recognizer.class_names)
    if args.annotate and not args.quiet:
        print(f"annotated images written to {args.annotate}", file=sys.stderr)
    return 0
