"""Arguments and helpers shared by every command, so that all follow the same conventions.

- Models are given with ``--model``; ``--out`` is always a folder; an existing non-empty output
  folder is refused unless ``--force``; a run that fails leaves no empty folder behind.
- Help texts show each option's default.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from ferlab.errors import ConfigError, FerlabError


class DefaultsFormatter(argparse.HelpFormatter):
    """Adds "(default: X)" to every option that has a meaningful default and does not say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or action.default in (None, False, [], argparse.SUPPRESS)
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


class FerlabParser(argparse.ArgumentParser):
    """An argument parser whose help shows defaults (sub-commands inherit it).

    Every command (a parser without sub-commands of its own) takes ``--quiet``, added when it
    parses if the command did not add its own, so that no command refuses it.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)
        self.has_commands = False

    def add_subparsers(self, **kwargs):
        """Sub-commands; a parser that has them leaves ``--quiet`` to each of them."""
        self.has_commands = True
        return super().add_subparsers(**kwargs)

    def parse_known_args(self, args=None, namespace=None):
        """Parse as argparse does, after giving a command without its own ``--quiet`` one."""
        if not self.has_commands:
            add_quiet_argument(self)
        return super().parse_known_args(args, namespace)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data``, ``--strict`` and ``--no-cache``, the same for every command that reads data."""
    parser.add_argument("--data", metavar="PATH", help="data set location (overrides the config)")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first bad row or image instead of skipping",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="decode the data again instead of using the cache"
    )


def add_config_arguments(parser: argparse.ArgumentParser, metavar: str = "CONFIG") -> None:
    """A CONFIG file and ``--set key=value`` overrides."""
    parser.add_argument("config", metavar=metavar, help="TOML configuration file")
    add_set_argument(parser)


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    """``--set key=value`` overrides of a config (repeatable)."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set solver.lr=1e-3 (repeatable)",
    )


def add_out_arguments(parser: argparse.ArgumentParser, *, what: str, default: str | None) -> None:
    """``--out DIR`` (a folder, always) and ``--force``."""
    where = f"; default: {default}" if default else ""
    parser.add_argument(
        "--out", required=default is None, metavar="DIR", help=f"folder to write {what} to{where}"
    )
    parser.add_argument(
        "--force", action="store_true", help="write into --out even if it is not empty"
    )


def add_quiet_argument(parser: argparse.ArgumentParser) -> None:
    """``--quiet``: no progress bars and no per-epoch (or per-trial) lines (once per parser)."""
    with contextlib.suppress(argparse.ArgumentError):  # the parser has its --quiet already
        parser.add_argument(
            "--quiet", action="store_true", help="no progress bars or per-epoch lines, results only"
        )


def add_classification_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tta`` and ``--min-confidence``: how each face is classified (predict and serve)."""
    parser.add_argument(
        "--tta",
        choices=("none", "flip"),
        default=None,
        help="test-time augmentation: flip averages each face with its mirror image (the "
        "default for ONNX and CNN models), none classifies the face alone (twice as fast)",
    )
    parser.add_argument(
        "--min-confidence",
        type=float,
        default=0.0,
        metavar="P",
        help="a face whose top probability is under P is reported as 'uncertain' "
        "(its probabilities still given); the model card gives accuracy and coverage per P",
    )


@contextlib.contextmanager
def output_folder(
    path: str | Path,
    *,
    force: bool,
    resume: bool = False,
    option: str = "--out",
    replaceable: tuple[str, ...] = (),
) -> Iterator[Path]:
    """Create the output folder ``path`` for a command and yield it.

    A non-empty existing folder is refused unless ``force`` (or ``resume``, which continues the
    run inside it), or unless it holds only files named in ``replaceable`` (a command's own
    outputs, which it rewrites). Messages name the folder by its ``option`` (``--annotate``).
    A folder this call created is removed again if the command fails and leaves it (and the
    parents it made) without a file.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise FerlabError(f"{option} {path}: exists and is not a folder")
    existed = path.exists()
    created = next((p for p in reversed([path, *path.parents]) if not p.exists()), None)
    foreign = existed and any(p.name not in replaceable for p in path.iterdir())
    if foreign and not (force or resume):
        raise FerlabError(
            f"{option} {path}: the folder is not empty; use --force to write into it, "
            f"or give another {option}"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FerlabError(f"{option} {path}: cannot create the folder ({exc.strerror})") from None
    try:
        yield path
    except BaseException:
        if created is not None and not any(p.is_file() for p in created.rglob("*")):
            shutil.rmtree(created, ignore_errors=True)
        raise


def recorded_data_path(model_path: str | Path) -> str | None:
    """The data path recorded in the run folder of a model (its ``config.json``), if any."""
    config = Path(model_path).expanduser().parent / "config.json"
    try:
        recorded = json.loads(config.read_text(encoding="utf-8"))["data"]["path"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if recorded and not Path(recorded).exists():
        raise ConfigError(
            f"{config} records the data path {recorded}, which does not exist here; give --data"
        )
    return recorded or None
