"""scikit-learn's 8x8 digits, the real data set that ships with a dependency (for the demo)."""

from __future__ import annotations

import numpy as np

from ferlab.data.images import LabeledImages

TEST_FRACTION = 0.2


def load_digits(path=None, *, strict: bool = False, use_cache: bool = True) -> LabeledImages:
    """The 1,797 digits as uint8 images (N, 8, 8) scaled to 0..255, with a fixed train/test split."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    train_idx, _ = train_test_split(
        np.arange(len(labels)), test_size=TEST_FRACTION, stratify=labels, random_state=0
    )
    splits = np.full(len(labels), "test", dtype="<U5")
    splits[train_idx] = "train"
    return LabeledImages(images, labels, [str(d) for d in range(10)], splits)
