"""The learners a comparison fits on each fold: ferlab fully connected and CNN configs and
scikit-learn baselines, each trained on the fold's training part and scored on its rest."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ferlab.data import LabeledImages
from ferlab.errors import ConfigError
from ferlab.nn import Preprocessor
from ferlab.settings import BaselineSettings, CNNSettings, DataSource, TrainSettings
from ferlab.settings.loading import load_config, read_toml, with_values

BASELINES = {
    "decision_tree": "sklearn.tree:DecisionTreeClassifier",
    "random_forest": "sklearn.ensemble:RandomForestClassifier",
    "logistic_regression": "sklearn.linear_model:LogisticRegression",
}


@dataclass
class FoldResult:
    """One learner's outcome on one fold."""

    error: float
    seconds: float
    size: dict[str, int]


@dataclass
class Learner:
    """A named learner: what kind it is and its checked config (frozen settings)."""

    name: str
    kind: str  # fully_connected, cnn or baseline
    settings: TrainSettings | CNNSettings | BaselineSettings
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def data(self) -> DataSource:
        """The learner's data table."""
        return self.settings.data

    def fit_and_score(
        self, train: LabeledImages, test: LabeledImages, image_shape: tuple[int, ...], seed: int
    ) -> FoldResult:
        """Train on ``train`` (seeded) and return the error on ``test``."""
        return FITTERS[self.kind](self.settings, train, test, image_shape, seed)


def load_learner(
    path: str | Path,
    overrides: list[str] | None = None,
    data_path: str | None = None,
) -> Learner:
    """Read a learner config and tell its kind from its tables."""
    raw = read_toml(path)
    name = Path(path).stem
    if "baseline" in raw:
        settings = load_config(path, overrides, data_path, schema=BaselineSettings)
        _baseline_estimator(settings, seed=0)  # unknown parameters fail here, before any training
        return Learner(name, "baseline", settings, str(path))
    if _is_cnn_config(raw):
        from ferlab.settings.cnn import load_cnn_config

        return Learner(name, "cnn", load_cnn_config(path, overrides, data_path), str(path))
    return Learner(name, "fully_connected", load_config(path, overrides, data_path), str(path))


def _is_cnn_config(raw: dict) -> bool:
    """CNN configs have conv widths or augment/device tables."""
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    if "widths" not in model and "augment" not in raw and "device" not in raw:
        return False
    try:
        import ferlab.deep  # noqa: F401
    except ImportError:
        raise ConfigError(
            "a CNN config needs the deep extra (pip install 'ferlab[deep]')"
        ) from None
    return True


def _baseline_estimator(settings: BaselineSettings, seed: int):
    import importlib

    module_name, class_name = BASELINES[settings.baseline.kind].split(":")
    estimator_class = getattr(importlib.import_module(module_name), class_name)
    params = dict(settings.baseline.params)
    known = estimator_class().get_params()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(
            f"baseline.params: {unknown} not parameters of {class_name}; "
            f"known: {', '.join(sorted(known))}"
        )
    params.setdefault("random_state", seed)
    try:
        return estimator_class(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"baseline.params: {exc}") from None


def baseline_size(estimator) -> dict[str, int]:
    """Stored numbers and bytes a fitted scikit-learn baseline needs to predict."""
    if hasattr(estimator, "coef_"):
        arrays = [estimator.coef_, estimator.intercept_]
    else:
        trees = getattr(estimator, "estimators_", [estimator])
        arrays = []
        for tree in trees:
            t = tree.tree_
            arrays += [t.children_left, t.children_right, t.feature, t.threshold, t.value]
    return {
        "parameters": int(sum(a.size for a in arrays)),
        "bytes": int(sum(a.nbytes for a in arrays)),
    }


def _fit_baseline(
    settings: BaselineSettings,
    train: LabeledImages,
    test: LabeledImages,
    image_shape: tuple[int, ...],
    seed: int,
) -> FoldResult:
    pre = Preprocessor(settings.data.preprocessing).fit(train.images)
    estimator = _baseline_estimator(settings, seed)
    started = time.perf_counter()
    estimator.fit(pre.transform(train.images), train.labels)
    seconds = time.perf_counter() - started
    error = float((estimator.predict(pre.transform(test.images)) != test.labels).mean())
    return FoldResult(error, seconds, baseline_size(estimator))


def _fit_fully_connected(
    settings: TrainSettings,
    train: LabeledImages,
    test: LabeledImages,
    image_shape: tuple[int, ...],
    seed: int,
) -> FoldResult:
    from ferlab.runs.fc import (
        build_model,
        build_solver,
        make_features,
    )

    splits = _fold_splits(settings, train, test, image_shape, seed)
    settings = with_values(settings, {"seed": seed})
    features = make_features(splits, settings.data.preprocessing, np.dtype(settings.model.dtype))
    model = build_model(settings, features, splits)
    solver = build_solver(settings, model, features, splits, verbose=False)
    started = time.perf_counter()
    solver.train()
    seconds = time.perf_counter() - started
    X_test, y_test = features.tests["fold_test"]
    error = float((model.scores(X_test).argmax(axis=1) != y_test).mean())
    size = {
        "parameters": int(sum(p.size for p in model.params.values())),
        "bytes": int(sum(p.nbytes for p in model.params.values())),
    }
    return FoldResult(error, seconds, size)


def _fold_splits(
    settings: TrainSettings | CNNSettings,
    train: LabeledImages,
    test: LabeledImages,
    image_shape: tuple[int, ...],
    seed: int,
):
    """A fold's parts: early stopping watches a validation part held out of its training part."""
    from ferlab.data.split import SplitImages, holdout_split

    fit_idx, val_idx = holdout_split(train.labels, settings.data.val_size, seed)
    return SplitImages(
        train.subset(np.sort(fit_idx)),
        train.subset(np.sort(val_idx)),
        {"fold_test": test},
        train.class_names,
        image_shape,
    )


def _fit_cnn(
    settings: CNNSettings,
    train: LabeledImages,
    test: LabeledImages,
    image_shape: tuple[int, ...],
    seed: int,
) -> FoldResult:
    import tempfile

    from ferlab.deep import load_cnn
    from ferlab.deep.checkpoint import MODEL_NAME
    from ferlab.deep.run import run_cnn_training

    splits = _fold_splits(settings, train, test, image_shape, seed)
    with tempfile.TemporaryDirectory(prefix="ferlab-compare-") as tmp:
        summary = run_cnn_training(
            with_values(settings, {"seed": seed}), tmp, splits=splits, verbose=False
        )
        module = load_cnn(Path(tmp) / MODEL_NAME).module
    params = list(module.parameters())
    size = {
        "parameters": int(sum(p.numel() for p in params)),
        "bytes": int(sum(p.numel() * p.element_size() for p in params)),
    }
    return FoldResult(1.0 - float(summary["fold_test_accuracy"]), summary["train_seconds"], size)


# How each kind of learner trains on a fold and scores the held-out part.
FITTERS = {"baseline": _fit_baseline, "fully_connected": _fit_fully_connected, "cnn": _fit_cnn}
