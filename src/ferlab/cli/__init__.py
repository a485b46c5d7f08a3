"""The ``ferlab`` command line: one module per command group, each with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import warnings

from ferlab.cli.common import FerlabParser
from ferlab.common.extras import missing_extra_message
from ferlab.errors import FerlabError

COMMAND_MODULES = [
    "ferlab.cli.train",
    "ferlab.cli.evaluate",
    "ferlab.cli.predict",
    "ferlab.cli.analyse",
    "ferlab.cli.compare",
    "ferlab.cli.extend",
    "ferlab.cli.adapt",
    "ferlab.cli.search",
    "ferlab.cli.cnn",
    "ferlab.cli.serve",
    "ferlab.cli.configs",
]


class VersionAction(argparse.Action):
    """``--version``: ferlab's, the shipped model's and the default detector's identity and the
    runtime libraries' versions (gathered only when asked, since it loads them)."""

    def __init__(
        self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None
    ):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from ferlab.inference.versions import version_facts, version_text

        sys.stdout.write(version_text(version_facts()))
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command group registered."""
    parser = FerlabParser(
        prog="ferlab", description="Train, tune, evaluate and use image classifiers."
    )
    parser.add_argument(
        "--version",
        action=VersionAction,
        help="ferlab's version, the model's and detector's, and the libraries' that run them",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"ferlab: warning: {message}", file=sys.stderr)


def configure_libraries() -> None:
    """The process-wide settings the command line wants, set here and never on import:
    a file-only matplotlib backend, Optuna's logging at warnings, and no warnings about the
    experimental or heartbeat APIs ferlab uses on purpose (each only where its extra is installed)."""
    with contextlib.suppress(ImportError):  # the lab extra
        import matplotlib

        matplotlib.use("Agg")
    with contextlib.suppress(ImportError):  # the lab extra
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
    except ImportError as exc:
        # A library of an extra that is not installed: say which extra, in one line.
        message = missing_extra_message(exc, f"ferlab {args.command}")
        if message is None:
            raise
        print(f"ferlab: error: {message}", file=sys.stderr)
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
