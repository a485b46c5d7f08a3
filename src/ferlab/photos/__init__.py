"""A user's own labelled photos: measure a model on them (:func:`evaluate_photos`) and adapt it
to them (:func:`adapt_photos`), with the detection, alignment and framing of ``ferlab predict``.

A photo set is a folder of class folders (``DIR/happy/*.jpg``) or a CSV file of
``path,label[,x,y,w,h]`` rows (see :mod:`ferlab.photos.sets`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ferlab.photos.adapt import adapt_photos
    from ferlab.photos.evaluate import evaluate_photos
    from ferlab.photos.sets import PhotoSet, load_photo_set

__all__ = ["PhotoSet", "adapt_photos", "evaluate_photos", "load_photo_set"]

_HOMES = {
    "PhotoSet": "ferlab.photos.sets",
    "load_photo_set": "ferlab.photos.sets",
    "evaluate_photos": "ferlab.photos.evaluate",
    "adapt_photos": "ferlab.photos.adapt",
}


def __getattr__(name: str):
    """The public functions, imported when first used (importing the package loads nothing)."""
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'ferlab.photos' has no attribute {name!r}")
