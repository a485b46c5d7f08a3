"""Predicting the class of every image in a folder with any ferlab classifier file.

Each image becomes the model's input as ``ferlab predict --detector none`` makes it
(:func:`ferlab.data.images.fit_image`): converted to the model's mode, resized to its size.
"""

from __future__ import annotations

import csv
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferlab.common.files import write_text_atomic
from ferlab.data.images import IMAGE_SUFFIXES, decode_image, target_format
from ferlab.errors import DataError


@dataclass
class Prediction:
    """One image's most likely class and its probability."""

    file: str
    class_index: int
    class_name: str
    probability: float


def image_files(folder: str | Path) -> list[Path]:
    """Regular files directly in ``folder``, in lexicographic file-name order."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder}: no such image folder")
    return sorted((p for p in folder.iterdir() if p.is_file()), key=lambda p: p.name)


def read_images(files: list[Path], input_shape) -> tuple[np.ndarray, list[Path]]:
    """Decode ``files`` as uint8 images shaped ``input_shape``; skip non-images with one warning.

    Returns the images and the files they came from. Images of another size or mode are converted,
    with one warning saying how many had to be resized.
    """
    size, mode = target_format(input_shape)
    arrays, kept, skipped, resized = [], [], [], 0
    for path in files:
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(f"{path.name} (not an image file)")
            continue
        try:
            array, was_resized = decode_image(path, size, mode)
        except ValueError as exc:
            skipped.append(f"{path.name} ({exc})")
            continue
        resized += was_resized
        arrays.append(array.reshape(input_shape))
        kept.append(path)
    if skipped:
        shown = ", ".join(skipped[:5]) + (
            f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        )
        warnings.warn(
            f"skipped {len(skipped)} file(s) that are not readable images: {shown}", stacklevel=2
        )
    if resized:
        warnings.warn(
            f"resized {resized} image(s) to {size[0]}x{size[1]}, the model's input size",
            stacklevel=2,
        )
    if not arrays:
        return np.zeros((0, *input_shape), dtype=np.uint8), []
    return np.stack(arrays), kept


def predict_images(classifier, folder: str | Path) -> list[Prediction]:
    """The most likely class of every image in ``folder``, in lexicographic file-name order."""
    images, files = read_images(image_files(folder), getattr(classifier, "input_shape", None))
    if not files:
        return []
    proba = np.asarray(classifier.predict_proba(images))
    best = proba.argmax(axis=1)
    names = getattr(classifier, "class_names", None) or [str(i) for i in range(proba.shape[1])]
    return [
        Prediction(path.name, int(k), names[k], float(proba[i, k]))
        for i, (path, k) in enumerate(zip(files, best, strict=True))
    ]


def predict_folder(folder: str | Path, model_path: str | Path) -> list[Prediction]:
    """Load a model file and predict every image in ``folder``."""
    from ferlab.inference.models import load_model

    return predict_images(load_model(model_path), folder)


def write_predictions_csv(predictions: list[Prediction], path: str | Path) -> Path:
    """Write ``file,class_index,class_name,probability`` rows."""
    handle = io.StringIO(newline="")
    writer = csv.writer(handle)
    writer.writerow(["file", "class_index", "class_name", "probability"])
    for p in predictions:
        writer.writerow([p.file, p.class_index, p.class_name, f"{p.probability:.6f}"])
    return write_text_atomic(path, handle.getvalue())
