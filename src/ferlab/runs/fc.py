"""The fully connected run: a training configuration end to end (data, split, preprocessing,
net, Solver) into a :class:`~ferlab.runs.RunFolder`. The CNN's run is :mod:`ferlab.deep.run`."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferlab.data import LabeledImages
from ferlab.data.split import TRAINING_DATA_KEYS, SplitImages, load_splits
from ferlab.nn import FullyConnectedNet, Preprocessor, Solver
from ferlab.nn.solver import CHECKPOINT_NAME
from ferlab.runs.folder import RunFolder
from ferlab.settings import TrainSettings, fc_engine_settings


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


def make_features(splits: SplitImages, preprocessing: str, dtype=np.float32) -> Features:
    """Fit the preprocessing on the training part and transform every part with it."""
    pre = Preprocessor(preprocessing).fit(splits.train.images)

    def transform(part: LabeledImages) -> tuple[np.ndarray, np.ndarray]:
        return pre.transform(part.images, dtype=dtype), part.labels

    X_train, y_train = transform(splits.train)
    X_val, y_val = transform(splits.val)
    tests = {name: transform(part) for name, part in splits.tests.items()}
    return Features(X_train, y_train, X_val, y_val, tests, pre)


def build_model(
    settings: TrainSettings, features: Features, splits: SplitImages
) -> FullyConnectedNet:
    """The configured fully connected net, carrying the preprocessing and class names."""
    model_settings, _ = fc_engine_settings(settings)
    model = FullyConnectedNet.from_settings(
        features.X_train.shape[1], len(splits.class_names), model_settings, seed=settings.seed
    )
    model.preprocessor = features.preprocessor
    model.class_names = list(splits.class_names)
    model.input_shape = splits.image_shape
    data = settings.data.model_dump()
    model.training_info = {
        "data": {k: data[k] for k in TRAINING_DATA_KEYS},
        "seed": settings.seed,
    }
    return model


def build_solver(
    settings: TrainSettings, model, features: Features, splits: SplitImages, **kwargs
) -> Solver:
    """A Solver with the configured update rule and schedule."""
    _, solver_settings = fc_engine_settings(settings)
    return Solver.from_settings(
        model,
        features.solver_data(),
        solver_settings,
        seed=settings.seed,
        image_shape=splits.image_shape,
        **kwargs,
    )


def accuracy(model, X: np.ndarray, y: np.ndarray) -> float:
    """Fraction of correct predictions on preprocessed features ``X`` (N, D)."""
    return float((model.scores(X).argmax(axis=1) == y).mean())


# What may differ between a run and its --resume: the data may have moved (its contents are
# checked), and a fully connected run may be given more epochs or another patience.
FC_MAY_CHANGE = ("data.path", "solver.epochs", "solver.patience")


def run_training(
    settings: TrainSettings,
    out_dir: str | Path,
    *,
    resume: str | Path | None = None,
    verbose: bool = True,
    strict: bool = False,
    use_cache: bool = True,
) -> dict:
    """Train the configured net and write model, history, curves and summary into ``out_dir``
    (a :class:`~ferlab.runs.RunFolder`)."""
    folder = RunFolder(out_dir, checkpoint_name=CHECKPOINT_NAME)
    splits = load_splits(settings, strict=strict, use_cache=use_cache)
    features = make_features(splits, settings.data.preprocessing, np.dtype(settings.model.dtype))
    folder.start(settings, splits, resume=resume, may_change=FC_MAY_CHANGE)
    model = build_model(settings, features, splits)
    solver = build_solver(
        settings, model, features, splits, checkpoint_dir=folder.path, verbose=verbose
    )
    if verbose:
        print(
            f"training on {len(features.y_train)} samples, validating on {len(features.y_val)}; "
            f"net {features.X_train.shape[1]}-{'-'.join(map(str, model.hidden_dims))}"
            f"{'-' if model.hidden_dims else ''}{model.num_classes}",
            file=sys.stderr,
        )
    history = solver.resume(resume) if resume else solver.train()
    model.save(folder.path / "model.npz")
    folder.record(history, settings, best_epoch=solver.best_epoch)
    summary = {
        "dataset": settings.data.dataset,
        "train_accuracy": accuracy(model, features.X_train, features.y_train),
        "val_accuracy": accuracy(model, features.X_val, features.y_val),
        **folder.loop_summary(solver, history, len(features.y_train), len(features.y_val)),
    }
    for name, (X_test, y_test) in features.tests.items():
        summary[f"{name}_accuracy"] = accuracy(model, X_test, y_test)
    if features.tests:
        summary["test_accuracy"] = summary[f"{next(iter(features.tests))}_accuracy"]
    return folder.finish(summary)
