"""``ferlab cnn``: train, evaluate and export the PyTorch CNN (needs the ``deep`` extra)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ferlab.cli.common import add_config_arguments, add_data_arguments
from ferlab.errors import FerlabError

INSTALL_HINT = "the CNN commands need PyTorch: pip install 'ferlab[deep]'"
TTA_CHOICES = ("none", "flip", "tencrop")


def require_torch() -> None:
    """Fail with the install hint when the deep extra is missing."""
    try:
        import safetensors  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        raise FerlabError(INSTALL_HINT) from None


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "cnn", help="the PyTorch CNN: train, evaluate, export", description=__doc__
    )
    commands = parser.add_subparsers(dest="cnn_command", metavar="COMMAND", required=True)

    train = commands.add_parser("train", help="train the CNN from a config")
    add_config_arguments(train)
    add_data_arguments(train)
    train.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write")
    train.add_argument("--resume", metavar="CHECKPOINT", help="continue from a checkpoint file")
    train.add_argument("--device", help="cpu, cuda or cuda:N (default: the config's, auto)")
    train.add_argument("--quiet", action="store_true", help="no progress output")
    train.set_defaults(func=run_train)

    evaluate = commands.add_parser("evaluate", help="the evaluation report of a CNN on a split")
    evaluate.add_argument("--model", required=True, metavar="MODEL", help="CNN model file")
    evaluate.add_argument(
        "--split", required=True, metavar="SPLIT", help="public, private or val (rebuilt)"
    )
    add_data_arguments(evaluate)
    evaluate.add_argument(
        "--tta",
        choices=TTA_CHOICES,
        default="none",
        help="test-time augmentation: none, flip (mirror) or tencrop (corners, centre, mirrored)",
    )
    evaluate.add_argument("--device", help="cpu, cuda or cuda:N (default: auto)")
    evaluate.add_argument(
        "--out", metavar="DIR", help="report folder (default: eval-SPLIT[-TTA] next to the model)"
    )
    evaluate.add_argument(
        "--format", choices=("text", "markdown", "json"), default="text", help="printed report"
    )
    evaluate.set_defaults(func=run_evaluate)

    export = commands.add_parser("export", help="export a CNN to ONNX, checked with onnxruntime")
    export.add_argument("model", metavar="MODEL", help="CNN model file")
    export.add_argument("--onnx", required=True, metavar="OUT.onnx", help="ONNX file to write")
    export.set_defaults(func=run_export)


def run_train(args: argparse.Namespace) -> int:
    require_torch()
    from ferlab.deep.settings import load_cnn_config
    from ferlab.deep.training import run_cnn_training

    config = load_cnn_config(args.config, args.overrides, args.data)
    summary = run_cnn_training(
        config,
        args.out,
        resume=args.resume,
        device=args.device,
        verbose=not args.quiet,
        strict=args.strict,
        use_cache=not args.no_cache,
    )
    print(json.dumps(summary, indent=2))
    print(f"run written to {args.out}")
    return 0


def _load_cnn(path: str, device: str | None):
    from ferlab.deep.io import load_cnn
    from ferlab.deep.training import resolve_device

    return load_cnn(path).to(resolve_device(device or "auto"))


def run_evaluate(args: argparse.Namespace) -> int:
    require_torch()
    from ferlab.cli.evaluate import print_report
    from ferlab.evaluation import evaluate_split

    classifier = _load_cnn(args.model, args.device)
    classifier.tta = args.tta
    suffix = "" if args.tta == "none" else f"-{args.tta}"
    out_dir = Path(args.out) if args.out else Path(args.model).parent / f"eval-{args.split}{suffix}"
    report = evaluate_split(
        classifier,
        args.data,
        args.split,
        out_dir=out_dir,
        strict=args.strict,
        use_cache=not args.no_cache,
    )
    print_report(report, args.format, out_dir)
    return 0


def run_export(args: argparse.Namespace) -> int:
    require_torch()
    from ferlab.deep.export import export_onnx

    check = export_onnx(_load_cnn(args.model, "cpu"), args.onnx)
    print(
        f"wrote {args.onnx}; onnxruntime agrees with PyTorch on {check['samples']} images "
        f"(max abs difference {check['max_abs_diff']:.2e})"
    )
    return 0
