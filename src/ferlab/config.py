"""Moved to :mod:`ferlab.settings.loading`; kept only for ``extend.py``'s two lazy imports, which
the lead is editing: delete this file once it imports from ``ferlab.settings.loading``."""

from ferlab.settings.loading import merge

__all__ = ["merge"]
