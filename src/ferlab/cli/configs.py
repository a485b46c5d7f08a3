"""``ferlab configs``: the configs that ship with ferlab; list them, print one, copy one to edit.

Every command that takes a CONFIG or SPACE file also takes a shipped config's name: ``ferlab train
digits_fc``, ``ferlab search random spaces/digits_demo``. A name is the config's path among the
shipped ones without ``.toml``; an existing file of that name is read instead.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "configs", help="list, show or copy the shipped configs", description=__doc__
    )
    parser.set_defaults(func=run_list)
    commands = parser.add_subparsers(dest="configs_command", metavar="COMMAND")
    listing = commands.add_parser("list", help="every shipped config's name and first line")
    listing.set_defaults(func=run_list)
    show = commands.add_parser("show", help="print a shipped config")
    show.add_argument("name", metavar="NAME", help="shipped config name, e.g. digits_fc")
    show.set_defaults(func=run_show)
    copy = commands.add_parser("copy", help="copy a shipped config to edit it")
    copy.add_argument("name", metavar="NAME", help="shipped config name, e.g. digits_fc")
    copy.add_argument(
        "dest", nargs="?", metavar="DEST", help="file or folder (default: ./NAME.toml)"
    )
    copy.add_argument("--force", action="store_true", help="replace an existing file")
    copy.set_defaults(func=run_copy)


def run_list(args: argparse.Namespace) -> int:
    from ferlab.configs import shipped_configs

    configs = shipped_configs()
    width = max(len(c.name) for c in configs)
    for config in configs:
        print(f"{config.name:<{width}}  {config.summary}".rstrip())
    return 0


def run_show(args: argparse.Namespace) -> int:
    from ferlab.configs import shipped_config

    sys.stdout.write(shipped_config(args.name).read_text(encoding="utf-8"))
    return 0


def run_copy(args: argparse.Namespace) -> int:
    from ferlab.configs import copy_config

    target = copy_config(args.name, args.dest, force=args.force)
    print(f"copied {args.name} to {target}")
    return 0
