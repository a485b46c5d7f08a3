"""Data sets: FER2013, CIFAR-10 and scikit-learn's digits, as uint8 images with labels and splits."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ferlab.data.images import LabeledImages
from ferlab.errors import ConfigError


@dataclass(frozen=True)
class DatasetSpec:
    """How to load a data set and which of its splits train and test."""

    loader: str
    train_split: str
    test_splits: tuple[str, ...]
    image_shape: tuple[int, ...]
    needs_path: bool = True  # False: the data ship with a dependency and take no path


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(
        "ferlab.data.digits:load_digits", "train", ("test",), (8, 8), needs_path=False
    ),
    "cifar10": DatasetSpec("ferlab.data.cifar10:load_cifar10", "train", ("test",), (32, 32, 3)),
    "fer2013": DatasetSpec(
        "ferlab.data.fer2013:load_fer2013", "training", ("public_test", "private_test"), (48, 48)
    ),
}


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of a named data set."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}") from None


def load_dataset(
    name: str, path=None, *, strict: bool = False, use_cache: bool = True
) -> LabeledImages:
    """Load a named data set from ``path`` (``digits`` ships with scikit-learn and takes none)."""
    spec = dataset_spec(name)
    module_name, func_name = spec.loader.split(":")
    loader = getattr(importlib.import_module(module_name), func_name)
    if spec.needs_path and path is None:
        raise ConfigError(
            f"dataset {name!r} needs its location: give --data PATH (or data.path in the config)"
        )
    if not spec.needs_path and path is not None:
        raise ConfigError(f"dataset {name!r} ships with its library and takes no --data ({path})")
    return loader(path, strict=strict, use_cache=use_cache)


def load_cifar10(path, **kwargs) -> LabeledImages:
    """CIFAR-10 from pickle batches or class folders (see :mod:`ferlab.data.cifar10`)."""
    from ferlab.data.cifar10 import load_cifar10 as _load

    return _load(path, **kwargs)


def load_fer2013(path, **kwargs) -> LabeledImages:
    """FER2013 from fer2013.csv, the coursework layout or class folders (see :mod:`ferlab.data.fer2013`)."""
    from ferlab.data.fer2013 import load_fer2013 as _load

    return _load(path, **kwargs)


__all__ = [
    "DATASETS",
    "DatasetSpec",
    "LabeledImages",
    "dataset_spec",
    "load_cifar10",
    "load_dataset",
    "load_fer2013",
]
