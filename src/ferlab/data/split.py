"""Seeded, stratified hold-out splits."""

from __future__ import annotations

import numpy as np

from ferlab.errors import DataError


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
