"""The statistics of a comparison: stratified folds and paired tests on fold errors."""

from __future__ import annotations

import math

import numpy as np

from ferlab.errors import ConfigError, DataError

ALPHA = 0.05


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
