"""Arguments and helpers shared by several commands."""

from __future__ import annotations

import argparse


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


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """A CONFIG file and ``--set key=value`` overrides."""
    parser.add_argument("config", metavar="CONFIG", help="TOML configuration file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set solver.lr=1e-3 (repeatable)",
    )
