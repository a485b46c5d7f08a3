"""Layer functions: each forward returns ``(out, cache)``, each backward takes ``(dout, cache)``."""

from __future__ import annotations

import numpy as np


def linear_forward(X: np.ndarray, W: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, tuple]:
    """Affine map ``X @ W + b`` with X flattened to (N, D)."""
    X_flat = X.reshape(X.shape[0], -1)
    out = X_flat @ W
    out += b
    return out, (X, W)


def linear_backward(
    dout: np.ndarray, cache: tuple, *, need_dX: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients (dX, dW, db) of the affine map; dX has X's original shape (None if not needed)."""
    X, W = cache
    X_flat = X.reshape(X.shape[0], -1)
    dW = X_flat.T @ dout
    db = dout.sum(axis=0)
    # The first layer's input gradient is never used: skipping it saves a third of the work.
    dX = (dout @ W.T).reshape(X.shape) if need_dX else None
    return dX, dW, db


def relu_forward(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Elementwise max(0, X)."""
    out = np.maximum(X, 0)
    return out, out


def relu_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """Gradient of ReLU: passes dout where the output was positive."""
    return np.where(cache > 0, dout, 0).astype(dout.dtype, copy=False)


def dropout_forward(
    X: np.ndarray, p: float, train: bool, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Inverted dropout: drop each unit with probability p and scale the kept ones by 1/(1-p)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not train or p == 0.0:
        return X, None
    if rng is None:
        rng = np.random.default_rng()
    keep_scale = np.asarray(1.0 / (1.0 - p), dtype=X.dtype)
    # The mask holds 0 or 1/(1-p), so backward is a single multiply.
    keep_mask = (rng.random(X.shape, dtype=np.float32) >= p).astype(X.dtype) * keep_scale
    return X * keep_mask, keep_mask


def dropout_backward(dout: np.ndarray, cache: np.ndarray | None) -> np.ndarray:
    """Gradient of inverted dropout, reusing the forward mask."""
    if cache is None:
        return dout
    return dout * cache


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for scores of any magnitude."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


def softmax_loss(scores: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean negative log-likelihood of the labels and its gradient with respect to the scores."""
    N = scores.shape[0]
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_norm
    rows = np.arange(N)
    loss = float(-log_probs[rows, y].mean())
    dscores = np.exp(log_probs)
    dscores[rows, y] -= 1
    dscores /= N
    return loss, dscores
