"""Comparing two learners on the same stratified cross-validation folds with paired tests.

A learner is a ferlab fully connected config, a CNN config (with the deep extra) or a scikit-learn
baseline config (``[baseline] kind = "random_forest"`` and ``[baseline.params]``). Folds cover the
data set's training split only; the test splits are never touched.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ferlab.config import load_config, merge, read_toml
from ferlab.data import LabeledImages, dataset_spec, load_dataset
from ferlab.errors import ConfigError, DataError
from ferlab.files import write_json_atomic
from ferlab.metrics import percent
from ferlab.nn import Preprocessor
from ferlab.progress import show_bars
from ferlab.settings import BaselineSettings

ALPHA = 0.05
BASELINES = {
    "decision_tree": "sklearn.tree:DecisionTreeClassifier",
    "random_forest": "sklearn.ensemble:RandomForestClassifier",
    "logistic_regression": "sklearn.linear_model:LogisticRegression",
}


# -- learners --------------------------------------------------------------------------------


@dataclass
class FoldResult:
    """One learner's outcome on one fold."""

    error: float
    seconds: float
    size: dict[str, int]


@dataclass
class Learner:
    """A named learner: what kind it is and its validated config."""

    name: str
    kind: str  # fully_connected, cnn or baseline
    config: dict
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def data_config(self) -> dict:
        return self.config["data"]

    def fit_and_score(
        self, train: LabeledImages, test: LabeledImages, image_shape: tuple[int, ...], seed: int
    ) -> FoldResult:
        """Train on ``train`` (seeded) and return the error on ``test``."""
        return FITTERS[self.kind](self.config, train, test, image_shape, seed)


def load_learner(
    path: str | Path,
    overrides: list[str] | None = None,
    data_path: str | None = None,
) -> Learner:
    """Read a learner config and tell its kind from its tables."""
    raw = read_toml(path)
    name = Path(path).stem
    if "baseline" in raw:
        config = load_config(path, overrides, data_path, schema=BaselineSettings)
        _baseline_estimator(config, seed=0)  # unknown parameters fail here, before any training
        return Learner(name, "baseline", config, str(path))
    if _is_cnn_config(raw):
        from ferlab.deep.settings import load_cnn_config

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


def _baseline_estimator(config: dict, seed: int):
    import importlib

    module_name, class_name = BASELINES[config["baseline"]["kind"]].split(":")
    estimator_class = getattr(importlib.import_module(module_name), class_name)
    params = dict(config["baseline"]["params"])
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
    config: dict,
    train: LabeledImages,
    test: LabeledImages,
    image_shape: tuple[int, ...],
    seed: int,
) -> FoldResult:
    pre = Preprocessor(config["data"]["preprocessing"]).fit(train.images)
    estimator = _baseline_estimator(config, seed)
    started = time.perf_counter()
    estimator.fit(pre.transform(train.images), train.labels)
    seconds = time.perf_counter() - started
    error = float((estimator.predict(pre.transform(test.images)) != test.labels).mean())
    return FoldResult(error, seconds, baseline_size(estimator))


def _fit_fully_connected(
    config: dict,
    train: LabeledImages,
    test: LabeledImages,
    image_shape: tuple[int, ...],
    seed: int,
) -> FoldResult:
    from ferlab.experiment import (
        build_model,
        build_solver,
        make_features,
    )

    splits = _fold_splits(config, train, test, image_shape, seed)
    config = merge(config, {"seed": seed})
    features = make_features(
        splits, config["data"]["preprocessing"], np.dtype(config["model"]["dtype"])
    )
    model = build_model(config, features, splits)
    solver = build_solver(config, model, features, splits, verbose=False)
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
    config: dict,
    train: LabeledImages,
    test: LabeledImages,
    image_shape: tuple[int, ...],
    seed: int,
):
    """A fold's parts: early stopping watches a validation part held out of its training part."""
    from ferlab.data.split import SplitImages, holdout_split

    fit_idx, val_idx = holdout_split(train.labels, config["data"]["val_size"], seed)
    return SplitImages(
        train.subset(np.sort(fit_idx)),
        train.subset(np.sort(val_idx)),
        {"fold_test": test},
        train.class_names,
        image_shape,
    )


def _fit_cnn(
    config: dict,
    train: LabeledImages,
    test: LabeledImages,
    image_shape: tuple[int, ...],
    seed: int,
) -> FoldResult:
    import tempfile

    from ferlab.deep import load_cnn
    from ferlab.deep.checkpoint import MODEL_NAME
    from ferlab.deep.run import run_cnn_training

    splits = _fold_splits(config, train, test, image_shape, seed)
    with tempfile.TemporaryDirectory(prefix="ferlab-compare-") as tmp:
        summary = run_cnn_training(merge(config, {"seed": seed}), tmp, splits=splits, verbose=False)
        module = load_cnn(Path(tmp) / MODEL_NAME).module
    params = list(module.parameters())
    size = {
        "parameters": int(sum(p.numel() for p in params)),
        "bytes": int(sum(p.numel() * p.element_size() for p in params)),
    }
    return FoldResult(1.0 - float(summary["fold_test_accuracy"]), summary["train_seconds"], size)


# -- paired tests ----------------------------------------------------------------------------


# How each kind of learner trains on a fold and scores the held-out part.
FITTERS = {"baseline": _fit_baseline, "fully_connected": _fit_fully_connected, "cnn": _fit_cnn}


def paired_tests(
    errors_a: np.ndarray, errors_b: np.ndarray, n_train: float, n_test: float
) -> dict[str, dict[str, float]]:
    """Paired t-test, Nadeau-Bengio corrected resampled t-test and Wilcoxon signed-rank test.

    ``n_train`` and ``n_test`` are the (mean) fold training and test sizes used by the correction.
    """
    from scipy import stats

    a = np.asarray(errors_a, dtype=np.float64)
    b = np.asarray(errors_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise DataError("paired tests need two equally long series of at least 2 fold errors")
    diff = a - b
    J = len(diff)
    mean, var = float(diff.mean()), float(diff.var(ddof=1))
    if np.ptp(diff) <= 1e-12:  # equal differences up to rounding: no spread at all
        var = 0.0
        mean = 0.0 if np.all(np.abs(diff) <= 1e-12) else mean

    def t_result(t_var: float) -> dict[str, float]:
        if t_var <= 0:  # identical differences: no spread, the sign of the mean decides
            return {
                "statistic": 0.0 if mean == 0 else math.copysign(math.inf, mean),
                "p_value": 1.0 if mean == 0 else 0.0,
            }
        t = mean / math.sqrt(t_var)
        return {"statistic": t, "p_value": float(2 * stats.t.sf(abs(t), J - 1))}

    paired = t_result(var / J)
    scipy_t = stats.ttest_rel(a, b) if var > 0 else None
    if scipy_t is not None:
        paired = {"statistic": float(scipy_t.statistic), "p_value": float(scipy_t.pvalue)}
    corrected = t_result((1.0 / J + n_test / n_train) * var)
    if mean == 0 and var == 0:
        wilcoxon = {"statistic": 0.0, "p_value": 1.0}
    else:
        w = stats.wilcoxon(a, b)
        wilcoxon = {"statistic": float(w.statistic), "p_value": float(w.pvalue)}
    return {
        "paired_t": {**paired, "dof": J - 1},
        "corrected_resampled_t": {**corrected, "dof": J - 1},
        "wilcoxon": wilcoxon,
    }


def verdict(record: dict) -> str:
    """A plain-language conclusion with the limits of what it shows."""
    a, b = record["learners"]["a"], record["learners"]["b"]
    tests = record["tests"]
    p = tests["corrected_resampled_t"]["p_value"]
    protocol = (
        f"{record['folds']}-fold stratified cross-validation"
        + (f" repeated {record['repeats']} times" if record["repeats"] > 1 else "")
        + f" on the {record['dataset']} training split ({record['n_samples']} samples)"
    )
    lines = [
        f"{a['name']}: mean error {percent(a['mean_error'])} (sd {percent(a['std_error'])}); "
        f"{b['name']}: mean error {percent(b['mean_error'])} (sd {percent(b['std_error'])}), "
        f"over {protocol}."
    ]
    if p < ALPHA:
        better, worse = (a, b) if a["mean_error"] < b["mean_error"] else (b, a)
        lines.append(
            f"The corrected resampled t-test (p = {p:.3g}) finds the difference significant at "
            f"the {ALPHA:g} level: {better['name']} had the lower error on these folds."
        )
    else:
        lines.append(
            f"The corrected resampled t-test (p = {p:.3g}) does not find a significant difference "
            f"at the {ALPHA:g} level."
        )
    lines.append(
        f"Paired t-test p = {tests['paired_t']['p_value']:.3g} (assumes independent folds, so it "
        f"is too optimistic); Wilcoxon signed-rank p = {tests['wilcoxon']['p_value']:.3g}"
        + (
            " (with so few folds its smallest possible p-value is large)."
            if record["folds"] * record["repeats"] < 6
            else "."
        )
    )
    lines.append(
        f"Training time per fold: {a['name']} {a['mean_seconds']:.3g} s, "
        f"{b['name']} {b['mean_seconds']:.3g} s; model size: {a['name']} "
        f"{a['size']['parameters']:,} numbers ({a['size']['bytes']:,} bytes), {b['name']} "
        f"{b['size']['parameters']:,} numbers ({b['size']['bytes']:,} bytes)."
    )
    lines.append(
        "Limits: one data set, one protocol, these hyper-parameters and this input "
        "representation; this is no claim that either learner is better in general."
    )
    return "\n".join(lines)


# -- the whole comparison --------------------------------------------------------------------


def check_fold_counts(folds: int, repeats: int) -> None:
    """Reject fewer than 2 folds or 1 repeat."""
    if folds < 2:
        raise ConfigError(f"--folds must be at least 2, got {folds}")
    if repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, got {repeats}")


def cv_folds(labels: np.ndarray, folds: int, repeats: int, seed: int) -> list[tuple]:
    """(repeat, fold, train_idx, test_idx) for seeded stratified K-fold, repeated R times."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    check_fold_counts(folds, repeats)
    smallest = int(np.bincount(labels)[np.bincount(labels) > 0].min())
    if smallest < folds:
        raise DataError(f"the smallest class has {smallest} samples, fewer than {folds} folds")
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    return [
        (i // folds, i % folds, train_idx, test_idx)
        for i, (train_idx, test_idx) in enumerate(splitter.split(np.zeros(len(labels)), labels))
    ]


def training_data(learner_a: Learner, learner_b: Learner, *, strict: bool, use_cache: bool):
    """The shared training split (both learners must name the same data)."""
    from ferlab.data.split import SplitImages, drop_classes

    da, db = learner_a.data_config, learner_b.data_config
    for key in ("dataset", "path", "exclude_classes", "train_limit"):
        value_a, value_b = da.get(key) or None, db.get(key) or None  # [] and absent agree
        if value_a != value_b:
            raise ConfigError(
                f"the two configs use different data.{key} ({value_a!r} vs {value_b!r})"
            )
    spec = dataset_spec(da["dataset"])
    data = load_dataset(da["dataset"], da["path"], strict=strict, use_cache=use_cache)
    train = data.split(spec.train_split)
    if len(train) == 0:
        raise DataError(f"the data has no {spec.train_split!r} samples")
    if da.get("exclude_classes"):
        shape = tuple(data.images.shape[1:])
        train = drop_classes(
            SplitImages(train, train, {}, train.class_names, shape), da["exclude_classes"]
        ).train
    limit = da.get("train_limit")
    if limit is not None:
        from ferlab.data.split import holdout_split

        if limit < len(train):
            keep, _ = holdout_split(train.labels, len(train) - limit, 0)
            train = train.subset(np.sort(keep))
    return train, tuple(data.images.shape[1:])


def summarize(learner: Learner, results: list[FoldResult]) -> dict:
    """Per-learner errors, mean and sd, time and size."""
    errors = [r.error for r in results]
    return {
        "name": learner.name,
        "kind": learner.kind,
        "config": learner.source,
        "errors": errors,
        "mean_error": float(np.mean(errors)),
        "std_error": float(np.std(errors, ddof=1)) if len(errors) > 1 else 0.0,
        "seconds": [round(r.seconds, 3) for r in results],
        "mean_seconds": float(np.mean([r.seconds for r in results])),
        "size": results[-1].size,
    }


def run_compare(
    learner_a: Learner,
    learner_b: Learner,
    *,
    folds: int,
    repeats: int = 1,
    seed: int = 0,
    out_dir: str | Path | None = None,
    strict: bool = False,
    use_cache: bool = True,
    verbose: bool = True,
) -> dict:
    """Cross-validate both learners on identical folds; test, plot and record the result."""
    check_fold_counts(folds, repeats)
    if learner_a.name == learner_b.name:
        learner_b.name += "_b"
    train, image_shape = training_data(learner_a, learner_b, strict=strict, use_cache=use_cache)
    splits = cv_folds(train.labels, folds, repeats, seed)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[FoldResult]] = {"a": [], "b": []}
    fold_rows = []
    bar = tqdm(splits, desc="folds", unit="fold", disable=not show_bars(verbose), file=sys.stderr)
    for repeat, fold, train_idx, test_idx in bar:
        fold_seed = seed + 1000 * repeat + fold
        fold_train, fold_test = train.subset(train_idx), train.subset(test_idx)
        row = {"repeat": repeat, "fold": fold, "n_train": len(train_idx), "n_test": len(test_idx)}
        for key, learner in (("a", learner_a), ("b", learner_b)):
            result = learner.fit_and_score(fold_train, fold_test, image_shape, fold_seed)
            results[key].append(result)
            row[f"error_{key}"], row[f"seconds_{key}"] = result.error, round(result.seconds, 3)
        fold_rows.append(row)
        if verbose:
            tqdm.write(
                f"repeat {repeat} fold {fold}: {learner_a.name} error {row['error_a']:.4f}, "
                f"{learner_b.name} error {row['error_b']:.4f}",
                file=sys.stderr,
            )
        if out is not None:  # an interrupted run keeps the folds it finished
            _write_json(out / "folds.json", fold_rows)
    n_train = float(np.mean([r["n_train"] for r in fold_rows]))
    n_test = float(np.mean([r["n_test"] for r in fold_rows]))
    record = {
        "dataset": learner_a.data_config["dataset"],
        "n_samples": len(train),
        "folds": folds,
        "repeats": repeats,
        "seed": seed,
        "learners": {
            "a": summarize(learner_a, results["a"]),
            "b": summarize(learner_b, results["b"]),
        },
        "fold_results": fold_rows,
        "tests": paired_tests(
            [r.error for r in results["a"]], [r.error for r in results["b"]], n_train, n_test
        ),
        "alpha": ALPHA,
    }
    record["verdict"] = verdict(record)
    if out is not None:
        _write_json(out / "compare.json", record)
        plot_fold_errors(record, out / "fold_errors.png")
    return record


def plot_fold_errors(record: dict, path: str | Path) -> Path:
    """Box plot of both learners' fold errors, with the individual folds drawn on top."""
    from matplotlib.figure import Figure

    from ferlab.plots import save_figure

    a, b = record["learners"]["a"], record["learners"]["b"]
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    ax.boxplot([a["errors"], b["errors"]], showfliers=False)  # every fold is drawn as a point
    ax.set_xticks([1, 2], [a["name"], b["name"]])
    rng = np.random.default_rng(0)
    for position, errors in ((1, a["errors"]), (2, b["errors"])):
        ax.scatter(position + rng.uniform(-0.08, 0.08, len(errors)), errors, s=12, alpha=0.7)
    ax.set_ylabel("fold error")
    repeats = f" x {record['repeats']}" if record["repeats"] > 1 else ""
    p = record["tests"]["corrected_resampled_t"]["p_value"]
    ax.set_title(f"{record['dataset']}: {record['folds']}-fold CV{repeats}, corrected t p={p:.3g}")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return save_figure(fig, path)


def _write_json(path: Path, payload) -> None:
    write_json_atomic(path, payload)
