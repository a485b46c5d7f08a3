"""Labelled photo sets: a folder of class folders or a CSV of ``path,label[,x,y,w,h]`` rows.

- Class folders: ``DIR/<label>/<photo>``, any format ``ferlab predict`` reads (PNG, JPEG, BMP,
  GIF, TIFF, WebP); hidden files and other suffixes are skipped.
- CSV: one row per face, ``path,label`` (the photo's largest face) or ``path,label,x,y,w,h``
  (the face in that box, in pixels; a photo may have several rows). Paths are relative to the
  CSV's folder unless absolute; a first row ``path,label,...`` is a header.

Labels are mapped with ``--map FROM=TO`` and checked against the model's classes by
:func:`class_indices`: a label the model does not know is refused in one line, unless it is
mapped or named as a new class.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ferlab.data.images import IMAGE_SUFFIXES
from ferlab.errors import ConfigError, DataError

Box = tuple[int, int, int, int]


@dataclass
class PhotoSet:
    """Labelled faces in photos: ``paths[i]`` holds a face labelled ``labels[i]``, in
    ``boxes[i]`` (x, y, w, h) or, when that is None, the photo's largest face."""

    paths: list[Path]
    labels: list[str]
    boxes: list[Box | None]
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def label_names(self) -> list[str]:
        """The distinct labels, sorted."""
        return sorted(set(self.labels))

    def counts(self) -> dict[str, int]:
        """Faces per label."""
        return {name: self.labels.count(name) for name in self.label_names}

    def fingerprint(self) -> str:
        """SHA-256 of the listing (path, label, box per face) and of every photo's bytes: the
        same photos with the same labels give the same value wherever they lie."""
        digest = hashlib.sha256()
        for path, label, box in zip(self.paths, self.labels, self.boxes, strict=True):
            digest.update(hashlib.sha256(path.read_bytes()).digest())
            digest.update(f"{label}\t{box}\n".encode())
        return digest.hexdigest()


def load_photo_set(source: str | Path, mapping: dict[str, str] | None = None) -> PhotoSet:
    """The labelled photos of a class-folder tree or a CSV file, labels mapped by ``mapping``."""
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such folder or CSV file")
    photos = _read_csv(path) if path.is_file() else _read_folders(path)
    if not len(photos):
        raise DataError(f"{path}: no labelled photos found (class folders or a path,label CSV)")
    if mapping:
        photos.labels = [mapping.get(label, label) for label in photos.labels]
    return photos


def _read_folders(root: Path) -> PhotoSet:
    paths, labels = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for item in sorted(folder.iterdir()):
            visible = item.is_file() and not item.name.startswith(".")
            if visible and item.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(item)
                labels.append(folder.name)
    loose = [p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if loose and not paths:
        raise DataError(
            f"{root}: photos lie in the folder itself; put them in one folder per label "
            f"({root}/happy/..., {root}/sad/...) or list them in a path,label CSV"
        )
    return PhotoSet(paths, labels, [None] * len(paths), str(root))


def _read_csv(path: Path) -> PhotoSet:
    paths, labels, boxes = [], [], []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file (a CSV of path,label rows)") from None
    rows = [row for row in csv.reader(text.splitlines()) if row and any(c.strip() for c in row)]
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    for number, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row]
        if len(cells) not in (2, 6) or not cells[0] or not cells[1]:
            raise DataError(
                f"{path}: row {number}: expected path,label or path,label,x,y,w,h, got {row!r}"
            )
        photo = Path(cells[0]).expanduser()
        photo = photo if photo.is_absolute() else path.parent / photo
        if not photo.is_file():
            raise DataError(f"{path}: row {number}: {photo}: no such photo")
        box = None
        if len(cells) == 6:
            try:
                box = tuple(int(round(float(c))) for c in cells[2:])
            except ValueError:
                raise DataError(
                    f"{path}: row {number}: the box {cells[2:]} is not 4 numbers"
                ) from None
            if box[2] <= 0 or box[3] <= 0:
                raise DataError(f"{path}: row {number}: the box's width and height must be > 0")
        paths.append(photo)
        labels.append(cells[1])
        boxes.append(box)
    return PhotoSet(paths, labels, boxes, str(path))


def parse_mapping(items: list[str] | None) -> dict[str, str]:
    """``["joy=happy", "calm=neutral"]`` -> ``{"joy": "happy", "calm": "neutral"}``."""
    mapping: dict[str, str] = {}
    for item in items or []:
        source, sep, target = item.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise ConfigError(f"--map takes LABEL=CLASS, got {item!r}")
        mapping[source.strip()] = target.strip()
    return mapping


def class_indices(
    labels: list[str], model_classes: list[str], new_classes: list[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Each label's index (N,) among the model's classes followed by ``new_classes``, and
    those class names; a label in neither is refused in one line."""
    new_classes = list(new_classes or [])
    known = set(model_classes)
    again = sorted(set(new_classes) & known)
    if again:
        raise ConfigError(f"--new-classes {again}: the model has these classes already")
    absent = sorted(set(new_classes) - set(labels))
    if absent:
        raise DataError(f"--new-classes {absent}: no photo has these labels")
    classes = [*model_classes, *new_classes]
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise DataError(
            f"label(s) {unknown} are not among the model's classes ({', '.join(model_classes)}); "
            "map them with --map LABEL=CLASS"
            + (", or add them with --new-classes" if new_classes is not None else "")
        )
    index = {name: i for i, name in enumerate(classes)}
    return np.array([index[label] for label in labels], dtype=np.int64), classes
