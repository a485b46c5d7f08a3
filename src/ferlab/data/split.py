"""Seeded, stratified hold-out splits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ferlab.data import dataset_spec, load_dataset
from ferlab.data.images import LabeledImages
from ferlab.errors import ConfigError, DataError, ModelFileError


def holdout_split(
    labels: np.ndarray, val_size: float | int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) with ``val_size`` (a fraction or a count) held out, stratified by label."""
    from sklearn.model_selection import train_test_split

    n = len(labels)
    if isinstance(val_size, float) and not 0 < val_size < 1:
        raise DataError(f"val_size as a fraction must be in (0, 1), got {val_size}")
    if isinstance(val_size, int) and not 0 < val_size < n:
        raise DataError(f"val_size must be between 1 and {n - 1}, got {val_size}")
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 else None
    try:
        return train_test_split(
            np.arange(n), test_size=val_size, stratify=stratify, random_state=seed
        )
    except ValueError:
        return train_test_split(np.arange(n), test_size=val_size, random_state=seed)


def stratified_subset(index: np.ndarray, labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` entries of ``index`` drawn with the class proportions of ``labels`` (seeded).

    Every class gets its share, rounded so that the total is ``size``; when ``size`` is below the
    number of classes, a seeded random draw.
    """
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    if size < len(classes):
        return rng.choice(index, size, replace=False)
    quota = np.floor(counts / counts.sum() * size).astype(int)
    quota = np.maximum(quota, 1)
    # Hand out what rounding left, to the classes with the largest remainders.
    remainder = counts / counts.sum() * size - quota
    for k in np.argsort(-remainder)[: max(0, size - quota.sum())]:
        quota[k] += 1
    while quota.sum() > size:
        quota[np.argmax(quota)] -= 1
    picked = [
        rng.choice(index[labels == c], min(q, n), replace=False)
        for c, q, n in zip(classes, quota, counts, strict=True)
    ]
    return np.concatenate(picked)


# What a model file records about its data so evaluation can rebuild the same validation split.
TRAINING_DATA_KEYS = (
    "dataset", "val_size", "split_seed", "train_limit", "preprocessing", "exclude_classes",
)  # fmt: skip
# Recorded only by runs that set it, so older model files and other model kinds stay comparable.
REFIT_KEY = "refit"


def held_out_part(training_info: dict) -> dict:
    """What decides which samples a model held out for validation, from the training information
    its file records: the data settings and the hold-out's seed (``data.split_seed``, else the
    run's seed). Models with equal held-out parts held out the same samples. ``train_limit`` is
    left out: it subsets what a run trains on, never what it holds out. A model that refit
    (``data.refit``) trained on its validation part, so it held out nothing."""
    data = dict(training_info.get("data") or {})
    data.pop("train_limit", None)
    if data.pop(REFIT_KEY, False):
        data[REFIT_KEY] = True
    split_seed = data.pop("split_seed", None)
    return {**data, "split_seed": training_info.get("seed") if split_seed is None else split_seed}


def teachers_on_other_splits(student_info: dict, teacher_infos: list[dict]) -> int:
    """How many teachers held out another part than the student, and so trained on most of its
    validation faces (none counts for a student that refit: it trained on them itself)."""
    if held_out_part(student_info).get(REFIT_KEY):
        return 0
    return sum(not same_held_out_part(info, student_info) for info in teacher_infos)


def same_held_out_part(training_info: dict, other_info: dict) -> bool:
    """Whether two models held out the same validation samples. One that did not has trained on
    most of the other's validation part: it must not start a run that picks its best epoch
    there, and as a teacher it makes that run's validation accuracy optimistic."""
    return held_out_part(training_info) == held_out_part(other_info)


@dataclass
class SplitImages:
    """Raw uint8 images split into training, validation and the data set's test splits."""

    train: LabeledImages
    val: LabeledImages
    tests: dict[str, LabeledImages]
    class_names: list[str]
    image_shape: tuple[int, ...]


def split_images(data: LabeledImages, data_config: dict, seed: int) -> SplitImages:
    """Hold a seeded validation part out of the training split; never touch the test splits.

    The hold-out (and ``train_limit``'s subset) use ``data_config["split_seed"]`` when it is set,
    otherwise ``seed``, the run's seed.
    """
    if data_config.get("split_seed") is not None:
        seed = data_config["split_seed"]
    spec = dataset_spec(data_config["dataset"])
    train_all = data.split(spec.train_split)
    if len(train_all) == 0:
        raise DataError(f"the data has no {spec.train_split!r} samples to train on")
    train_idx, val_idx = holdout_split(train_all.labels, data_config["val_size"], seed)
    train_idx = np.sort(train_idx)
    limit = data_config.get("train_limit")
    if limit is not None and limit < len(train_idx):
        train_idx = np.sort(stratified_subset(train_idx, train_all.labels[train_idx], limit, seed))
    tests = {name: data.split(name) for name in spec.test_splits}
    splits = SplitImages(
        train_all.subset(train_idx),
        train_all.subset(np.sort(val_idx)),
        {name: part for name, part in tests.items() if len(part)},
        data.class_names,
        tuple(data.images.shape[1:]),
    )
    excluded = data_config.get("exclude_classes") or []
    return drop_classes(splits, excluded) if excluded else splits


# The validation part a run holds out unless its config says otherwise (the schema's default).
DEFAULT_VAL_SIZE = 0.1


@dataclass(frozen=True)
class RecordedSplits:
    """A model's data split rebuilt from its file's record: the ``splits``, the data settings
    they were made with, and whether the record named the hold-out (``val_size`` and a seed)
    rather than the defaults filling in for it."""

    splits: SplitImages
    data_config: dict
    recorded: bool


def recorded_splits(
    data: LabeledImages,
    training_info: dict | None,
    *,
    dataset: str | None = None,
    every_class: bool = False,
) -> RecordedSplits:
    """The train/val/test split a model was trained on, from the training record its file holds
    (``training_info``: ``data`` settings and ``seed``), for ``data`` of ``dataset`` (default:
    the recorded one). What the record leaves out takes the defaults a run takes: val_size
    :data:`DEFAULT_VAL_SIZE`, seed 0, no train_limit. The one rebuild of a model's split, used by
    ``evaluate`` and ``extend`` alike. Classes the model was trained without are dropped from
    every split, as in training, unless ``every_class`` (extend needs them)."""
    info = training_info or {}
    data_config = dict(info.get("data") or {})
    if dataset is not None:
        data_config["dataset"] = dataset
    if "dataset" not in data_config:
        raise ModelFileError("the model does not record which data set it was trained on")
    recorded = "val_size" in data_config and "seed" in info
    data_config.setdefault("val_size", DEFAULT_VAL_SIZE)
    data_config.setdefault("train_limit", None)
    if every_class:
        data_config["exclude_classes"] = []
    splits = split_images(data, data_config, int(info.get("seed", 0)))
    return RecordedSplits(splits, data_config, recorded)


def drop_classes(splits: SplitImages, excluded: list[str]) -> SplitImages:
    """Remove the named classes from every part and renumber the rest in their original order."""
    unknown = sorted(set(excluded) - set(splits.class_names))
    if unknown:
        raise ConfigError(
            f"data.exclude_classes names unknown class(es) {unknown}; "
            f"known: {', '.join(splits.class_names)}"
        )
    kept = [name for name in splits.class_names if name not in excluded]
    if len(kept) < 2:
        raise ConfigError("data.exclude_classes leaves fewer than 2 classes")
    new_label = np.full(len(splits.class_names), -1, dtype=np.int64)
    new_label[[splits.class_names.index(name) for name in kept]] = np.arange(len(kept))

    def keep(part: LabeledImages) -> LabeledImages:
        # Excluding after the hold-out split keeps the validation part a subset of the full one.
        part = part.subset(new_label[part.labels] >= 0)
        return LabeledImages(part.images, new_label[part.labels], kept, part.splits, part.names)

    return SplitImages(
        keep(splits.train),
        keep(splits.val),
        {name: keep(part) for name, part in splits.tests.items()},
        kept,
        splits.image_shape,
    )


def load_splits(settings, *, strict: bool = False, use_cache: bool = True) -> SplitImages:
    """Load the data set of a checked config and split it: ``settings`` is a settings object
    with a ``data`` table and a ``seed`` (:class:`ferlab.settings.TrainSettings`,
    :class:`ferlab.settings.CNNSettings`)."""
    data = load_dataset(
        settings.data.dataset, settings.data.path, strict=strict, use_cache=use_cache
    )
    return split_images(data, settings.data.model_dump(), settings.seed)
