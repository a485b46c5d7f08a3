"""The ``ferlab`` command line: one module per command group, each with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from ferlab import __version__
from ferlab.cli.common import FerlabParser
from ferlab.errors import FerlabError

COMMAND_MODULES = [
    "ferlab.cli.train",
    "ferlab.cli.evaluate",
    "ferlab.cli.predict",
    "ferlab.cli.compare",
    "ferlab.cli.extend",
    "ferlab.cli.search",
    "ferlab.cli.cnn",
    "ferlab.cli.serve",
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command group registered."""
    parser = FerlabParser(
        prog="ferlab", description="Train, tune, evaluate and use image classifiers."
    )
    parser.add_argument("--version", action="version", version=f"ferlab {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"ferlab: warning: {message}", file=sys.stderr)


def configure_libraries() -> None:
    """The process-wide settings the command line wants, set here and never on import:
    a file-only matplotlib backend, Optuna's logging at warnings, and no warnings about the
    experimental or heartbeat APIs ferlab uses on purpose."""
    import matplotlib

    matplotlib.use("Agg")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a command, turning user errors into one line on stderr."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    warnings.showwarning = _show_warning
    configure_libraries()
    try:
        return int(args.func(args) or 0)
    except FerlabError as exc:
        print(f"ferlab: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader (e.g. `| head`) closed the pipe: stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        # Disk full, a file too large, a folder that cannot be written: say which file, no trace.
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"ferlab: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ferlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
