"""Comparing two learners on the same stratified cross-validation folds with paired tests.

A learner is a ferlab fully connected config, a CNN config (with the deep extra) or a scikit-learn
baseline config (``[baseline] kind = "random_forest"`` and ``[baseline.params]``). Folds cover the
data set's training split only; the test splits are never touched.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ferlab.common.progress import show_bars
from ferlab.compare.learners import FoldResult, Learner, load_learner
from ferlab.compare.stats import ALPHA, check_fold_counts, cv_folds, paired_tests
from ferlab.data import dataset_spec, load_dataset
from ferlab.errors import ConfigError, DataError
from ferlab.evaluation.metrics import percent
from ferlab.runs import RunFolder

__all__ = [
    "ALPHA",
    "FoldResult",
    "Learner",
    "cv_folds",
    "load_learner",
    "paired_tests",
    "plot_fold_errors",
    "run_compare",
    "verdict",
]


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


def training_data(learner_a: Learner, learner_b: Learner, *, strict: bool, use_cache: bool):
    """The shared training split (both learners must name the same data)."""
    from ferlab.data.split import SplitImages, drop_classes

    da, db = learner_a.data, learner_b.data
    for key in ("dataset", "path", "exclude_classes", "train_limit"):
        value_a, value_b = getattr(da, key) or None, getattr(db, key) or None  # [] and None agree
        if value_a != value_b:
            raise ConfigError(
                f"the two configs use different data.{key} ({value_a!r} vs {value_b!r})"
            )
    spec = dataset_spec(da.dataset)
    data = load_dataset(da.dataset, da.path, strict=strict, use_cache=use_cache)
    train = data.split(spec.train_split)
    if len(train) == 0:
        raise DataError(f"the data has no {spec.train_split!r} samples")
    if da.exclude_classes:
        shape = tuple(data.images.shape[1:])
        train = drop_classes(
            SplitImages(train, train, {}, train.class_names, shape), da.exclude_classes
        ).train
    limit = da.train_limit
    if limit is not None and limit < len(train):
        # The subset `train` draws of its training part (stratified, seeded by data.split_seed
        # or the run's seed), here of the whole training split that the folds cover.
        from ferlab.data.split import stratified_subset

        seed = getattr(da, "split_seed", None)  # a baseline has no hold-out, so no split_seed
        seed = learner_a.settings.seed if seed is None else seed
        keep = stratified_subset(np.arange(len(train)), train.labels, limit, seed)
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
    folder = RunFolder(out_dir) if out_dir is not None else None
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
        if folder is not None:  # an interrupted run keeps the folds it finished
            folder.write_json("folds.json", fold_rows)
    n_train = float(np.mean([r["n_train"] for r in fold_rows]))
    n_test = float(np.mean([r["n_test"] for r in fold_rows]))
    record = {
        "dataset": learner_a.data.dataset,
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
    if folder is not None:
        folder.write_json("compare.json", record)
        plot_fold_errors(record, folder.path / "fold_errors.png")
    return record


def plot_fold_errors(record: dict, path: str | Path) -> Path:
    """Box plot of both learners' fold errors, with the individual folds drawn on top."""
    from matplotlib.figure import Figure

    from ferlab.common.plots import save_figure

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
