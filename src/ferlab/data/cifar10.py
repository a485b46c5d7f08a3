"""CIFAR-10: python pickle batches (folder, the original tar.gz or a zip) and class-folder images."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from ferlab.data.cache import cached
from ferlab.data.images import LabeledImages, is_archive, is_zip, iter_files, read_class_folders
from ferlab.data.integrity import open_tar, open_zip, verify_sha256
from ferlab.errors import DataError

CLASS_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
IMAGE_BYTES = 32 * 32 * 3


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches (dicts of lists, bytes and NumPy arrays) and refuses anything else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")


def _read_batch(payload: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _ArrayOnlyUnpickler(io.BytesIO(payload), encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (
        pickle.UnpicklingError,
        EOFError,
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
    ) as exc:
        raise DataError(f"{where}: corrupt CIFAR-10 batch ({exc})") from None
    if data.ndim != 2 or data.shape[1] != IMAGE_BYTES or len(data) != len(labels):
        raise DataError(f"{where}: expected rows of {IMAGE_BYTES} bytes, one label each")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{where}: labels outside 0..9")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _load_pickle_batches(path: Path) -> LabeledImages:
    found: dict[str, bytes] = {}
    batch_names = (*TRAIN_BATCHES, TEST_BATCH)
    for rel, read in iter_files(path, wanted=lambda rel: rel.name in batch_names):
        try:
            found[rel.name] = read()
        except (ValueError, OSError) as exc:
            raise DataError(f"{path}/{rel}: unreadable CIFAR-10 batch ({exc})") from None
    missing = [name for name in (*TRAIN_BATCHES, TEST_BATCH) if name not in found]
    if missing:
        raise DataError(f"{path}: CIFAR-10 batches missing: {', '.join(missing)}")
    batches = [(name, "train") for name in TRAIN_BATCHES] + [(TEST_BATCH, "test")]
    images, labels, splits = [], [], []
    for name, split in batches:
        batch_images, batch_labels = _read_batch(found[name], f"{path}/{name}")
        images.append(batch_images)
        labels.append(batch_labels)
        splits.append(np.full(len(batch_labels), split))
    images, labels, splits = np.concatenate(images), np.concatenate(labels), np.concatenate(splits)
    return LabeledImages(images, labels, list(CLASS_NAMES), splits)


def _has_pickle_batches(path: Path) -> bool:
    if path.is_dir():
        return any(path.rglob(TEST_BATCH))
    if is_zip(path):
        with open_zip(path) as archive:
            return any(Path(name).name == TEST_BATCH for name in archive.namelist())
    # Only the headers up to the first test_batch are read; iter_files then checks the whole.
    with open_tar(path) as archive:
        return any(Path(member.name).name == TEST_BATCH for member in archive)


def load_cifar10(path, *, strict: bool = False, use_cache: bool = True) -> LabeledImages:
    """CIFAR-10 as uint8 images (N, 32, 32, 3), labels, class names and splits ``train``/``test``."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if not (path.is_dir() or is_archive(path)):
        raise DataError(f"{path}: expected a folder, a .tar.gz or a .zip of CIFAR-10")
    if _has_pickle_batches(path):
        verify_sha256(path)  # the batches are not cached: a SHA256SUMS beside is checked each time
        return _load_pickle_batches(path)

    def load() -> LabeledImages:
        return read_class_folders(
            path,
            CLASS_NAMES,
            {"train": "train", "test": "test"},
            size=(32, 32),
            mode="RGB",
            strict=strict,
        )

    return cached("cifar10", path, {"strict": strict}, load, use_cache)
