"""``ferlab predict``: the emotion of every face in photos, folders and videos."""

from __future__ import annotations

import argparse
import contextlib
import sys

from ferlab.cli.common import add_classification_arguments, output_folder
from ferlab.vision.detect import DEFAULT_DETECTOR, DETECTORS
from ferlab.vision.track import SMOOTHING_HALF_LIFE


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
        type=int,
        default=None,
        metavar="PIXELS",
        help="smallest face side searched, in pixels of the photo (default: blazeface 30, "
        "haar 10%% of the shorter side)",
    )
    parser.add_argument(
        "--min-score",
        type=float,
        default=None,
        metavar="S",
        help="smallest detector score kept (blazeface: a face probability in [0, 1]; lower finds "
        "more faces and more false ones)",
    )
    add_classification_arguments(parser)
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
        "--smooth",
        type=float,
        default=SMOOTHING_HALF_LIFE,
        metavar="SECONDS",
        help="video: smooth each face track's probabilities with this half-life (0: off)",
    )
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="video: also write each video's emotions per face track over time as a PNG plot "
        "into --annotate (needs ferlab[lab])",
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
        args.model,
        detector=args.detector,
        min_face=args.min_face,
        min_score=args.min_score,
        threads=args.threads,
        tta=args.tta,
        min_confidence=args.min_confidence,
    )
    with contextlib.ExitStack() as stack:
        annotate = args.annotate and stack.enter_context(
            output_folder(args.annotate, force=args.force, option="--annotate")
        )
        rows = analyze_inputs(
            recognizer,
            files,
            every=args.every,
            top_k=args.top_k,
            annotate_dir=annotate or None,
            smooth=args.smooth,
            timeline=args.timeline,
        )
        write_rows(rows, sys.stdout, args.format, recognizer.class_names)
    if args.annotate and not args.quiet:
        print(f"annotated images written to {args.annotate}", file=sys.stderr)
    return 0
