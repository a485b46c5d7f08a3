"""Running a training configuration end to end: data, split, preprocessing, Solver, run directory."""

from __future__ import annotations

import hashlib
import json
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferlab.config import changed_keys
from ferlab.data import LabeledImages
from ferlab.data.split import TRAINING_DATA_KEYS, SplitImages, load_splits
from ferlab.errors import ConfigError
from ferlab.files import write_json_atomic
from ferlab.nn import FullyConnectedNet, Preprocessor, Solver
from ferlab.nn.solver import CHECKPOINT_NAME
from ferlab.settings import fc_engine_settings


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


def build_model(config: dict, features: Features, splits: SplitImages) -> FullyConnectedNet:
    """The configured fully connected net, carrying the preprocessing and class names."""
    settings, _ = fc_engine_settings(config)
    model = FullyConnectedNet.from_settings(
        features.X_train.shape[1], len(splits.class_names), settings, seed=config["seed"]
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
    _, settings = fc_engine_settings(config)
    return Solver.from_settings(
        model,
        features.solver_data(),
        settings,
        seed=config["seed"],
        image_shape=splits.image_shape,
        **kwargs,
    )


def accuracy(model, X: np.ndarray, y: np.ndarray) -> float:
    """Fraction of correct predictions on preprocessed features ``X`` (N, D)."""
    return float((model.scores(X).argmax(axis=1) == y).mean())


# What may differ between a run and its --resume: the data may have moved (its contents are
# checked), and a fully connected run may be given more epochs or another patience.
FC_MAY_CHANGE = ("data.path", "solver.epochs", "solver.patience")


def data_digest(splits: SplitImages) -> str:
    """A fingerprint of the training and validation parts (images and labels)."""
    digest = hashlib.sha256()
    for part in (splits.train, splits.val):
        digest.update(np.ascontiguousarray(part.labels).tobytes())
        digest.update(np.ascontiguousarray(part.images).tobytes())
    return digest.hexdigest()


def start_run(
    config: dict, out_dir: Path, splits: SplitImages, resume, may_change: tuple[str, ...]
) -> None:
    """Record a run's config and data fingerprint in ``out_dir/run.json`` as it starts.

    On ``resume``, compare with the record in the checkpoint's folder: a changed key that may
    not change, or other data, is refused with a message naming them.
    """
    record = {"config": config, "data_digest": data_digest(splits)}
    if resume is not None:
        stored_path = Path(resume).parent / "run.json"
        try:
            stored = json.loads(stored_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = None
        if stored is None:
            warnings.warn(
                f"{stored_path} is missing: cannot check that --resume uses the same config",
                stacklevel=2,
            )
        else:
            changed = [k for k in changed_keys(stored["config"], config) if k not in may_change]
            if changed:
                raise ConfigError(
                    f"--resume with another config: {', '.join(changed)} differ from the "
                    f"checkpoint's run ({stored_path}); only {', '.join(may_change)} may change"
                )
            if stored.get("data_digest") != record["data_digest"]:
                raise ConfigError(
                    f"--resume with other data: the data at {config['data']['path']} is not the "
                    "data the checkpoint's run started with"
                )
    write_json_atomic(out_dir / "run.json", record)


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
    start_run(config, out_dir, splits, resume, FC_MAY_CHANGE)
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
    write_json_atomic(out_dir / "history.json", history)
    write_json_atomic(out_dir / "config.json", config)
    plot_history(history, out_dir, title=out_dir.name, best_epoch=solver.best_epoch or None)
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
    write_json_atomic(out_dir / "summary.json", summary)
    (out_dir / CHECKPOINT_NAME).unlink(missing_ok=True)
    return summary
