"""``ferlab cnn``: train and export the PyTorch CNN (needs the ``deep`` extra).

Evaluate a CNN like any model with ``ferlab evaluate`` (``--tta`` for test-time augmentation).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ferlab.cli.common import (
    add_config_arguments,
    add_data_arguments,
    add_out_arguments,
    add_quiet_argument,
    output_folder,
)
from ferlab.errors import FerlabError

INSTALL_HINT = "the CNN commands need PyTorch: pip install 'ferlab[deep]'"


def require_torch() -> None:
    """Fail with the install hint when the deep extra is missing."""
    try:
        import safetensors  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        raise FerlabError(INSTALL_HINT) from None


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "cnn", help="the PyTorch CNN: train, export", description=__doc__
    )
    commands = parser.add_subparsers(dest="cnn_command", metavar="COMMAND", required=True)

    train = commands.add_parser("train", help="train the CNN from a config")
    add_config_arguments(train)
    add_data_arguments(train)
    add_out_arguments(train, what="the run (model, checkpoint, history, plots)", default=None)
    train.add_argument(
        "--resume", metavar="CHECKPOINT", help="continue from a checkpoint file (into --out)"
    )
    train.add_argument("--device", help="cpu, cuda or cuda:N (default: the config's, auto)")
    add_quiet_argument(train)
    train.set_defaults(func=run_train)

    export = commands.add_parser("export", help="export a CNN to ONNX, checked with onnxruntime")
    export.add_argument("--model", required=True, metavar="MODEL", help="CNN model file")
    export.add_argument(
        "--out", metavar="DIR", help="folder for MODEL_NAME.onnx (default: the model's folder)"
    )
    export.add_argument("--force", action="store_true", help="replace an existing .onnx file")
    export.set_defaults(func=run_export)


def run_train(args: argparse.Namespace) -> int:
    require_torch()
    from ferlab.deep.run import run_cnn_training
    from ferlab.settings.cnn import load_cnn_config

    settings = load_cnn_config(args.config, args.overrides, args.data)
    with output_folder(args.out, force=args.force, resume=bool(args.resume)) as out:
        summary = run_cnn_training(
            settings,
            out,
            resume=args.resume,
            device=args.device,
            verbose=not args.quiet,
            strict=args.strict,
            use_cache=not args.no_cache,
        )
    print(json.dumps(summary, indent=2))
    print(f"run written to {args.out}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    require_torch()
    from ferlab.deep.export import export_onnx
    from ferlab.deep.io import load_cnn
    from ferlab.inference.models import model_kind

    model = Path(args.model)
    kind = model_kind(model)
    if kind != "cnn":
        raise FerlabError(f"{model}: a {kind} model; only CNN models (.safetensors) export to ONNX")
    target = Path(args.out or model.parent) / f"{model.stem}.onnx"
    if target.exists() and not args.force:
        raise FerlabError(f"{target} exists; use --force to replace it")
    check = export_onnx(load_cnn(model), target)
    print(
        f"wrote {target}; onnxruntime agrees with PyTorch on {check['samples']} images "
        f"(max abs difference {check['max_abs_diff']:.2e})"
    )
    return 0
