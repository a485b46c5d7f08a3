"""CIFAR-10: python pickle batches (folder, the original tar.gz or a zip) and class-folder images."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from ferlab.data.cache import cached
from ferlab.data.images import LabeledImages, is_archive, is_zip, iter_files, read_class_folders
from ferlab.data.integrity import one_line, open_tar, open_zip, verify_sha256
from ferlab.errors import DataError

CLASS_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
IMAGE_BYTES = 32 * 32 * 3


_NUMERIC_KINDS = "biuf"  # dtypes a batch may hold: no objects, no structured or void types


def _text(value) -> str:
    """A pickled str, or a Python 2 str that ``encoding="bytes"`` gives as bytes."""
    if isinstance(value, bytes):
        return value.decode("ascii")
    if isinstance(value, str):
        return value
    raise pickle.UnpicklingError(f"expected text, got {type(value).__name__}")


class _SafeDtype:
    """Stands in for ``numpy.dtype`` while unpickling: a plain numeric dtype only.

    NumPy's own ``dtype.__setstate__`` trusts its state (element size, alignment, flags), and a
    damaged one crashes the interpreter; here only the byte order is taken from it.
    """

    def __init__(self, spec, align=False, copy=True) -> None:
        dtype = np.dtype(_text(spec))
        if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype:
            raise pickle.UnpicklingError(f"refused dtype {dtype}")
        self.dtype = dtype

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple) or len(state) < 2:
            raise pickle.UnpicklingError("damaged dtype state")
        order = _text(state[1])
        if order not in "<>|=" or len(order) != 1:
            raise pickle.UnpicklingError(f"damaged dtype byte order {order!r}")
        if order in "<>":
            self.dtype = self.dtype.newbyteorder(order)


class _SafeArray:
    """Stands in for ``numpy._core.multiarray._reconstruct``'s array: built from its raw bytes
    with :func:`numpy.frombuffer` once its shape, dtype and size agree (``.array``)."""

    def __init__(self, *_args) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("damaged array state")
        shape, dtype, fortran, raw = state[-4:]
        if not isinstance(dtype, _SafeDtype) or not isinstance(raw, bytes | bytearray):
            raise pickle.UnpicklingError("damaged array state")
        if not isinstance(shape, tuple) or not all(
            isinstance(n, int) and 0 <= n < 1 << 31 for n in shape
        ):
            raise pickle.UnpicklingError(f"damaged array shape {shape!r}")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count * dtype.dtype.itemsize != len(raw):
            raise pickle.UnpicklingError(
                f"array of shape {shape} needs {count * dtype.dtype.itemsize} bytes, has {len(raw)}"
            )
        flat = np.frombuffer(bytes(raw), dtype=dtype.dtype)
        self.array = flat.reshape(shape, order="F" if fortran else "C")


def _safe_scalar(dtype, raw):
    if not isinstance(dtype, _SafeDtype) or not isinstance(raw, bytes):
        raise pickle.UnpicklingError("damaged NumPy scalar")
    if len(raw) != dtype.dtype.itemsize:
        raise pickle.UnpicklingError("damaged NumPy scalar")
    return np.frombuffer(raw, dtype=dtype.dtype)[0]


def _unwrap(value):
    """The arrays of a loaded batch, where the unpickler left stand-ins."""
    if isinstance(value, _SafeArray):
        if value.array is None:
            raise pickle.UnpicklingError("an array without its data")
        return value.array
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    if isinstance(value, _SafeDtype):
        raise pickle.UnpicklingError("a dtype where data belongs")
    return value


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches (dicts of lists, bytes and NumPy arrays) and refuses anything else.

    NumPy's classes are never called on the file's data: stand-ins build plain numeric arrays
    with ``frombuffer`` (a damaged dtype state crashes NumPy's own unpickling).
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _SafeArray,
        ("numpy._core.multiarray", "_reconstruct"): _SafeArray,
        ("numpy", "ndarray"): np.ndarray,  # only passed to _reconstruct, never called
        ("numpy", "dtype"): _SafeDtype,
        ("numpy.core.multiarray", "scalar"): _safe_scalar,
        ("numpy._core.multiarray", "scalar"): _safe_scalar,
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[module, name]
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")


def _read_batch(payload: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _ArrayOnlyUnpickler(io.BytesIO(payload), encoding="bytes").load()
        if not isinstance(batch, dict):
            raise TypeError(f"a {type(batch).__name__}, not a dict")
        data = np.asarray(_unwrap(batch[b"data"]), dtype=np.uint8)
        labels = np.asarray(_unwrap(batch[b"labels"]), dtype=np.int64)
    except (
        pickle.UnpicklingError,
        EOFError,
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
        IndexError,  # e.g. an array where the dict belongs, indexed by b"data"
        OverflowError,  # values that do not fit uint8 or int64
        MemoryError,
        RecursionError,
        UnicodeDecodeError,
    ) as exc:
        raise DataError(f"{where}: corrupt CIFAR-10 batch ({one_line(exc)})") from None
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
