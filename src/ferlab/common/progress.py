"""When progress bars are drawn: only for a person watching a terminal."""

from __future__ import annotations

import sys


def show_bars(verbose: bool) -> bool:
    """Whether to draw progress bars: ``verbose`` and stderr is a terminal.

    Redirected to a file or a pipe (CI logs, ``nohup``), every bar frame would be written out;
    the per-epoch (or per-trial) summary lines are printed either way.
    """
    return bool(verbose) and sys.stderr.isatty()
