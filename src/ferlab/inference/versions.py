"""What gave a result: ferlab's version, the model's and the detector's identity, and the versions
of the libraries that run them. ``ferlab --version`` prints these facts and ``GET /v1/model``
answers them, both from :func:`version_facts`, so a problem report can name all of them.

Example::

    from ferlab.inference.versions import version_facts, version_text
    print(version_text(version_facts()))
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path

from ferlab import __version__
from ferlab.assets import SHIPPED_NAME

NOT_INSTALLED = "not installed"


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, in hex; empty when the file cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return ""
    return digest.hexdigest()


def model_identity(model: str | os.PathLike | None = None) -> dict:
    """The model's ``name`` (the model card's for the shipped model, else the file's stem),
    ``version`` (the first 12 hex digits of its SHA-256, as ``/v1/analyze`` answers it),
    ``sha256`` and ``file`` (``shipped`` for the shipped model, else its path).

    ``model`` is a model file, ``"shipped"`` or None (the shipped model)."""
    from ferlab.assets import model_card, resolve_model, shipped_model_path

    path = resolve_model(model)
    sha256 = file_sha256(path)
    shipped = path.resolve() == shipped_model_path().resolve()
    name = model_card().get("name", path.stem) if shipped else path.stem
    return {
        "name": name,
        "version": sha256[:12],
        "sha256": sha256,
        "file": SHIPPED_NAME if shipped else str(path),
    }


def detector_identity(detector: object | str | None = None) -> dict:
    """The face detector's ``name`` and ``version``: of ``detector`` (an object with ``name`` and
    ``version``, or a detector's name), or of the default detector when None. A detector that
    cannot be made here (OpenCV missing) gives its name and the one-line reason as its version."""
    from ferlab.errors import FerlabError
    from ferlab.vision.detect import DEFAULT_DETECTOR, make_detector

    if detector is None or isinstance(detector, str):
        name = detector or DEFAULT_DETECTOR
        try:
            detector = make_detector(name)
        except FerlabError as exc:
            return {"name": name, "version": f"unavailable: {exc}"}
    return {
        "name": str(getattr(detector, "name", type(detector).__name__)),
        "version": str(getattr(detector, "version", "unknown")),
    }


def library_version(module: str) -> str:
    """``module.__version__`` of an importable library, else ``"not installed"``."""
    import importlib

    try:
        return str(importlib.import_module(module).__version__)
    except ImportError:
        return NOT_INSTALLED


def version_facts(
    model: str | os.PathLike | None = None, detector: object | str | None = None
) -> dict:
    """Every fact ``ferlab --version`` prints, as a JSON-ready dict: ``ferlab``, ``model``
    (:func:`model_identity`), ``detector`` (:func:`detector_identity`), ``onnxruntime``,
    ``opencv`` and ``python`` versions."""
    return {
        "ferlab": __version__,
        "model": model_identity(model),
        "detector": detector_identity(detector),
        "onnxruntime": library_version("onnxruntime"),
        "opencv": library_version("cv2"),
        "python": platform.python_version(),
    }


def version_text(facts: dict) -> str:
    """:func:`version_facts` as the lines ``ferlab --version`` prints, ending in a newline."""
    model, detector = facts["model"], facts["detector"]
    where = "" if model["file"] == SHIPPED_NAME else f", {Path(model['file'])}"
    lines = [
        f"ferlab {facts['ferlab']}",
        f"model {model['name']} {model['version']} (sha256 {model['sha256']}{where})",
        f"detector {detector['name']} {detector['version']}",
        f"onnxruntime {facts['onnxruntime']}",
        f"opencv {facts['opencv']}",
        f"python {facts['python']}",
    ]
    return "\n".join(lines) + "\n"
