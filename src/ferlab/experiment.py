"""Running a training configuration end to end: data, split, preprocessing, Solver, run directory."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferlab.data import LabeledImages, dataset_spec, load_dataset
from ferlab.data.split import holdout_split
from ferlab.errors import ConfigError, DataError
from ferlab.nn import FullyConnectedNet, Preprocessor, Solver
from ferlab.nn.solver import CHECKPOINT_NAME

# What a model file records about its data so evaluation can rebuild the same validation split.
TRAINING_DATA_KEYS = ("dataset", "val_size", "train_limit", "preprocessing", "exclude_classes")


@dataclass
class SplitImages:
    """Raw uint8 images split into training, validation and the data set's test splits."""

    train: LabeledImages
    val: LabeledImages
    tests: dict[str, LabeledImages]
    class_names: list[str]
    image_shape: tuple[int, ...]


@dataclass
class Features:
    """Model-ready float arrays, with the preprocessing fitted on the training part."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    tests: dict[str, tuple[np.ndarray, np.ndarray]]
    preprocessor: Preprocessor

    def solver_data(self) -> dict:
        """The dict a :class:`Solver` takes."""
        return {
            "X_train": self.X_train,
            "y_train": self.y_train,
            "X_val": self.X_val,
            "y_val": self.y_val,
        }


def split_images(data: LabeledImages, data_config: dict, seed: int) -> SplitImages:
    """Hold a seeded validation part out of the training split; never touch the test splits."""
    spec = dataset_spec(data_config["dataset"])
    train_all = data.split(spec.train_split)
    if len(train_all) == 0:
        raise DataError(f"the data has no {spec.train_split!r} samples to train on")
    train_idx, val_idx = holdout_split(train_all.labels, data_config["val_size"], seed)
    train_idx = np.sort(train_idx)
    limit = data_config.get("train_limit")
    if limit is not None:
        train_idx = train_idx[:limit]
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


def load_splits(config: dict, *, strict: bool = False, use_cache: bool = True) -> SplitImages:
    """Load the configured data set and split it."""
    data_config = config["data"]
    data = load_dataset(
        data_config["dataset"], data_config["path"], strict=strict, use_cache=use_cache
    )
    return split_images(data, data_config, config["seed"])


def make_features(splits: SplitImages, preprocessing: str, dtype=np.float32) -> Features:
    """Fit the preprocessing on the training part and transform every part with it."""
    pre = Preprocessor(preprocessing).fit(splits.train.images)

    def transform(part: LabeledImages) -> tuple[np.ndarray, np.ndarray]:
        return pre.transform(part.images, dtype=dtype), part.labels

    X_train, y_train = transform(splits.train)
    X_val, y_val = transform(splits.val)
    tests = {name: transform(part) for name, part in splits.tests.items()}
    return Features(X_train, y_train, X_val, y_val, tests, pre)


def build_model(config: dict, features: Features, splits: SplitImages) -> FullyConnectedNet:
    """The configured fully connected net, carrying the preprocessing and class names."""
    model_config = config["model"]
    model = FullyConnectedNet(
        features.X_train.shape[1],
        model_config["hidden_dims"],
        len(splits.class_names),
        dropout=model_config["dropout"],
        reg=model_config["reg"],
        weight_scale=model_config["weight_scale"],
        dtype=np.dtype(model_config["dtype"]),
        seed=config["seed"],
    )
    model.preprocessor = features.preprocessor
    model.class_names = list(splits.class_names)
    model.input_shape = splits.image_shape
    model.training_info = {
        "data": {k: config["data"][k] for k in TRAINING_DATA_KEYS},
        "seed": config["seed"],
    }
    return model


def build_solver(config: dict, model, features: Features, splits: SplitImages, **kwargs) -> Solver:
    """A Solver with the configured update rule and schedule."""
    solver_config = dict(config["solver"])
    return Solver(
        model,
        features.solver_data(),
        seed=config["seed"],
        image_shape=splits.image_shape,
        **solver_config,
        **kwargs,
    )


def accuracy(model, X: np.ndarray, y: np.ndarray) -> float:
    """Fraction of correct predictions on preprocessed features ``X`` (N, D)."""
    return float((model.scores(X).argmax(axis=1) == y).mean())


def write_json(path: Path, payload) -> None:
    """Write indented JSON."""
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def run_training(
    config: dict,
    out_dir: str | Path,
    *,
    resume: str | Path | None = None,
    verbose: bool = True,
    strict: bool = False,
    use_cache: bool = True,
) -> dict:
    """Train the configured net and write model, history, curves and summary into ``out_dir``."""
    from ferlab.plots import plot_history

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    splits = load_splits(config, strict=strict, use_cache=use_cache)
    features = make_features(
        splits, config["data"]["preprocessing"], np.dtype(config["model"]["dtype"])
    )
    model = build_model(config, features, splits)
    solver = build_solver(config, model, features, splits, checkpoint_dir=out_dir, verbose=verbose)
    if verbose:
        print(
            f"training on {len(features.y_train)} samples, validating on {len(features.y_val)}; "
            f"net {features.X_train.shape[1]}-{'-'.join(map(str, model.hidden_dims))}"
            f"{'-' if model.hidden_dims else ''}{model.num_classes}",
            file=sys.stderr,
        )
    history = solver.resume(resume) if resume else solver.train()
    model.save(out_dir / "model.npz")
    write_json(out_dir / "history.json", history)
    write_json(out_dir / "config.json", config)
    plot_history(history, out_dir)
    summary = {
        "dataset": config["data"]["dataset"],
        "train_accuracy": accuracy(model, features.X_train, features.y_train),
        "val_accuracy": accuracy(model, features.X_val, features.y_val),
        "epochs": solver.epoch,
        "best_epoch": solver.best_epoch,
        "stopped_early": solver.stopped_early,
        "seconds": round(time.perf_counter() - started, 2),
        "train_seconds": round(float(sum(history["seconds"])), 2),
        "n_train": int(len(features.y_train)),
        "n_val": int(len(features.y_val)),
    }
    for name, (X_test, y_test) in features.tests.items():
        summary[f"{name}_accuracy"] = accuracy(model, X_test, y_test)
    if features.tests:
        summary["test_accuracy"] = summary[f"{next(iter(features.tests))}_accuracy"]
    write_json(out_dir / "summary.json", summary)
    (out_dir / CHECKPOINT_NAME).unlink(missing_ok=True)
    return summary
