"""Centred-difference numeric gradients for checking analytic ones."""

from __future__ import annotations

import numpy as np


def numeric_gradient(
    f, x: np.ndarray, dout: np.ndarray | None = None, h: float = 1e-5
) -> np.ndarray:
    """Gradient of sum(f(x) * dout) (or of scalar f) with respect to x, by centred differences."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    while not it.finished:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        plus = f(x)
        x[i] = old - h
        minus = f(x)
        x[i] = old
        diff = (plus - minus) if dout is None else ((plus - minus) * dout).sum()
        grad[i] = diff / (2 * h)
        it.iternext()
    return grad


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """Largest elementwise relative error."""
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))
