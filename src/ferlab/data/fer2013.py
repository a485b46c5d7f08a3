"""FER2013 from Kaggle's ``fer2013.csv``, the coursework layout or class folders (folder, tar, zip).

Every layout gives uint8 images (N, 48, 48), labels 0..6 in the canonical order and each sample's
split: ``training``, ``public_test`` or ``private_test``.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from ferlab.data.cache import cached
from ferlab.data.images import (
    IMAGE_SUFFIXES,
    BadInputReport,
    LabeledImages,
    decode_image,
    is_archive,
    read_class_folders,
)
from ferlab.errors import DataError

CLASS_NAMES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
SIDE = 48
PIXELS = SIDE * SIDE
# The Usage column of fer2013.csv, and the file-name prefixes of the image release.
USAGE_SPLITS = {"Training": "training", "PublicTest": "public_test", "PrivateTest": "private_test"}
# Other spellings of the class folders found in public releases.
CLASS_ALIASES = {
    "anger": "angry",
    "disgusted": "disgust",
    "fearful": "fear",
    "happiness": "happy",
    "sadness": "sad",
    "surprised": "surprise",
}
COURSEWORK_LABELS = "labels_public.txt"
CSV_NAME = "fer2013.csv"


def _split_of_file(name: str, folder_split: str) -> str:
    """The original split from a ``Training_``/``PublicTest_``/``PrivateTest_`` prefix."""
    prefix = name.split("_", 1)[0]
    return USAGE_SPLITS.get(prefix, folder_split)


def _load_class_folders(path: Path, strict: bool) -> LabeledImages:
    # A test folder without Usage prefixes is taken as PublicTest, the set the report tested on.
    return read_class_folders(
        path,
        CLASS_NAMES,
        {"train": "training", "test": "public_test"},
        size=(SIDE, SIDE),
        mode="L",
        strict=strict,
        split_of_file=_split_of_file,
        aliases=CLASS_ALIASES,
    )


def _text_encoding(head: bytes) -> str:
    """UTF-16 when a byte-order mark says so (spreadsheets' "Unicode text"), else UTF-8 with an
    optional byte-order mark (spreadsheets' "CSV UTF-8")."""
    return "utf-16" if head.startswith((b"\xff\xfe", b"\xfe\xff")) else "utf-8-sig"


def _open_text(path: Path) -> io.TextIOBase:
    """A CSV file (or ``.gz``) as text, in the encoding its first bytes show."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as probe:
        encoding = _text_encoding(probe.read(4))
    return io.TextIOWrapper(opener(path, "rb"), encoding=encoding, newline="")


def _parse_label(text: str) -> int | None:
    try:
        label = int(text.strip())
    except ValueError:
        return None
    return label if 0 <= label < len(CLASS_NAMES) else None


def _load_csv(path: Path, strict: bool) -> LabeledImages:
    report = BadInputReport(str(path), strict)
    images, labels, splits = [], [], []
    try:
        with _open_text(path) as handle:
            reader = csv.reader(handle)
            header = [h.strip() for h in next(reader, [])]
            if "emotion" not in header or "pixels" not in header:
                raise DataError(f"{path}: expected a header with 'emotion' and 'pixels' columns")
            col_label, col_pixels = header.index("emotion"), header.index("pixels")
            col_usage = header.index("Usage") if "Usage" in header else None
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                where = f"line {line}"
                if len(row) < len(header):
                    report.add(where, f"{len(row)} columns, expected {len(header)}")
                    continue
                label = _parse_label(row[col_label])
                if label is None:
                    report.add(where, f"label {row[col_label]!r} is not one of 0..6")
                    continue
                try:
                    pixels = np.array(row[col_pixels].split(), dtype=np.int64)
                except (ValueError, OverflowError):
                    report.add(where, "pixels are not whole numbers in 0..255")
                    continue
                if pixels.size != PIXELS:
                    report.add(where, f"{pixels.size} pixels, expected {PIXELS}")
                    continue
                if pixels.min() < 0 or pixels.max() > 255:
                    report.add(where, "pixel values outside 0..255")
                    continue
                usage = row[col_usage].strip() if col_usage is not None else "Training"
                if usage not in USAGE_SPLITS:
                    report.add(where, f"unknown Usage {usage!r}")
                    continue
                images.append(pixels.astype(np.uint8).reshape(SIDE, SIDE))
                labels.append(label)
                splits.append(USAGE_SPLITS[usage])
    except (OSError, EOFError, UnicodeError, csv.Error, zlib.error) as exc:
        raise DataError(f"{path}: unreadable or truncated CSV ({exc})") from None
    skipped = report.finish()
    if not images:
        raise DataError(f"{path}: no valid rows")
    return LabeledImages(
        np.stack(images), np.array(labels), list(CLASS_NAMES), np.array(splits), None, skipped
    )


def _coursework_split(image: str) -> str | None:
    top = PurePosixPath(image).parts[0].lower() if image else ""
    return {"train": "training", "test": "public_test"}.get(top)


def _load_coursework(root: Path, strict: bool) -> LabeledImages:
    labels_file = root / COURSEWORK_LABELS
    report = BadInputReport(str(labels_file), strict)
    images, labels, splits, names = [], [], [], []
    try:
        with _open_text(labels_file) as handle:
            reader = csv.reader(handle)
            header = [h.strip() for h in next(reader, [])]
            if header[:2] != ["img", "emotion"]:
                raise DataError(f"{labels_file}: expected the header 'img,emotion'")
            rows = list(enumerate(reader, start=2))
    except (OSError, UnicodeError, csv.Error) as exc:
        raise DataError(f"{labels_file}: unreadable ({exc})") from None
    for line, row in rows:
        if not row:
            continue
        where = f"line {line}"
        if len(row) < 2:
            report.add(where, "expected 'img,emotion'")
            continue
        name = row[0].strip().replace("\\", "/")
        label = _parse_label(row[1])
        if label is None:
            report.add(where, f"label {row[1]!r} is not one of 0..6")
            continue
        split = _coursework_split(name)
        if split is None:
            report.add(where, f"{name!r} is not under Train/ or Test/")
            continue
        image_path = root / name
        if not image_path.is_file():
            report.add(where, f"{name}: no such file")
            continue
        try:
            array, _ = decode_image(image_path, None, "L")
        except ValueError as exc:
            report.add(name, str(exc))
            continue
        if array.shape != (SIDE, SIDE):
            report.add(name, f"image is {array.shape[1]}x{array.shape[0]}, expected {SIDE}x{SIDE}")
            continue
        images.append(array)
        labels.append(label)
        splits.append(split)
        names.append(name)
    skipped = report.finish()
    if not images:
        raise DataError(f"{labels_file}: no readable labelled images")
    return LabeledImages(
        np.stack(images),
        np.array(labels),
        list(CLASS_NAMES),
        np.array(splits),
        np.array(names),
        skipped,
    )


def detect_layout(path: Path) -> tuple[str, Path]:
    """The layout of a FER2013 source (``csv``, ``coursework``, ``class_folders``) and its root."""
    name = path.name.lower()
    if path.is_file():
        if name.endswith((".csv", ".csv.gz")):
            return "csv", path
        if is_archive(path):
            return "class_folders", path
        raise DataError(
            f"{path}: expected fer2013.csv[.gz], a folder or a .tar.gz or .zip of images"
        )
    for candidate in (path, *sorted(p for p in path.iterdir() if p.is_dir())):
        if (candidate / COURSEWORK_LABELS).is_file():
            return "coursework", candidate
        for csv_name in (CSV_NAME, f"{CSV_NAME}.gz"):
            if (candidate / csv_name).is_file():
                return "csv", candidate / csv_name
    return "class_folders", path


def load_fer2013(path, *, strict: bool = False, use_cache: bool = True) -> LabeledImages:
    """FER2013 as uint8 images (N, 48, 48), labels 0..6 and splits (training, public, private)."""
    if path is None:
        raise DataError(
            "FER2013 needs a path: fer2013.csv, a coursework folder or an image folder/tar/zip"
        )
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    layout, source = detect_layout(path)
    loaders = {
        "csv": _load_csv,
        "coursework": _load_coursework,
        "class_folders": _load_class_folders,
    }

    def load() -> LabeledImages:
        return loaders[layout](source, strict)

    return cached(f"fer2013-{layout}", source, {"strict": strict}, load, use_cache)


__all__ = ["CLASS_NAMES", "IMAGE_SUFFIXES", "detect_layout", "load_fer2013"]
