"""Input transforms learnt on training data and stored with the model."""

from __future__ import annotations

import numpy as np

MODES = ("center", "standardize", "per_image")
FIT_CHUNK = 8192


class Preprocessor:
    """Flatten, optionally normalise each image, subtract the training mean and divide by a scale.

    Modes: ``center`` subtracts the per-pixel mean; ``standardize`` also divides by the global
    standard deviation; ``per_image`` first gives every image zero mean and unit variance.
    """

    def __init__(self, mode: str = "standardize") -> None:
        if mode not in MODES:
            raise ValueError(f"preprocessing must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.mean: np.ndarray | None = None
        self.scale: float = 1.0

    def _flat(self, X: np.ndarray, dtype) -> np.ndarray:
        X = X.reshape(X.shape[0], -1).astype(dtype)
        if self.mode == "per_image":
            X -= X.mean(axis=1, keepdims=True)
            X /= X.std(axis=1, keepdims=True) + dtype(1e-3)
        return X

    def fit(self, X_raw: np.ndarray) -> Preprocessor:
        """Learn the per-pixel mean and the global scale from training images."""
        n = X_raw.shape[0]
        if n == 0:
            raise ValueError("cannot fit preprocessing on an empty training set")
        chunks = [slice(s, s + FIT_CHUNK) for s in range(0, n, FIT_CHUNK)]
        self.mean = sum(self._flat(X_raw[c], np.float64).sum(axis=0) for c in chunks) / n
        self.scale = 1.0
        if self.mode != "center":
            sq_total = sum(
                float(((self._flat(X_raw[c], np.float64) - self.mean) ** 2).sum()) for c in chunks
            )
            self.scale = float(np.sqrt(sq_total / (n * self.mean.size))) or 1.0
        return self

    def transform(self, X_raw: np.ndarray, dtype=np.float32) -> np.ndarray:
        """Transformed copy of X_raw as (N, D) rows of ``dtype``."""
        if self.mean is None:
            raise RuntimeError("Preprocessor.transform called before fit")
        dtype = np.dtype(dtype).type
        X = self._flat(X_raw, dtype)
        if X.shape[1] != self.mean.size:
            raise ValueError(f"expected {self.mean.size} features per sample, got {X.shape[1]}")
        X -= self.mean.astype(dtype)
        X *= dtype(1.0 / self.scale)
        return X

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """JSON metadata and arrays that describe this transform."""
        return {"mode": self.mode, "scale": self.scale}, {"mean": self.mean}

    @classmethod
    def from_state(cls, meta: dict, arrays: dict[str, np.ndarray]) -> Preprocessor:
        """Rebuild a fitted transform from :meth:`state`."""
        pre = cls(meta["mode"])
        pre.scale = float(meta["scale"])
        pre.mean = np.asarray(arrays["mean"], dtype=np.float64)
        return pre
