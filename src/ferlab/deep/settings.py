"""Moved to :mod:`ferlab.settings.cnn`; kept only for ``extend.py``'s two lazy imports, which the
lead is editing: delete this file once it imports from ``ferlab.settings.cnn``."""

from ferlab.settings.cnn import CNN_DEFAULTS, validate_cnn_config

__all__ = ["CNN_DEFAULTS", "validate_cnn_config"]
