"""Whether probabilities mean what they say: calibration error, temperature scaling, coverage.

A classifier is calibrated when, of the faces it gives a top probability near 0.9, about 90% are
right. The expected calibration error (ECE) measures the gap: the top probabilities are put in
equal-width bins over [0, 1] and the gap between each bin's accuracy and its mean top probability
is averaged, weighted by the bin's share of the samples.

Temperature scaling (Guo et al., 2017) divides the logits by one number T fitted on held-out
samples to minimise the negative log-likelihood: T > 1 softens overconfident probabilities, T < 1
sharpens underconfident ones; the most likely class never changes. Since ``log p`` differs from
the logits by a constant per sample, it works on probabilities too: ``softmax(log p / T)``.
"""

from __future__ import annotations

import math

import numpy as np

ECE_BINS = 15
# Temperatures outside this range are refused: they would flatten or sharpen any model to nonsense.
TEMPERATURE_RANGE = (0.05, 20.0)
# Test-time augmentation: each choice and the views of a face whose probabilities it averages.
TTA_VIEWS = {"none": 1, "flip": 2}
UNCERTAIN = "uncertain"


def _checked(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or labels.shape != (len(probs),):
        raise ValueError(
            f"probabilities must be (N, C) and labels (N,), got {probs.shape} and {labels.shape}"
        )
    return probs, labels


def reliability_bins(probs, labels, bins: int = ECE_BINS) -> list[dict]:
    """Per equal-width bin of the top probability ``(lo, hi]``: its count, mean top probability
    (``confidence``) and accuracy; bins without samples have count 0 and None for both.

    probs: (N, C) probabilities; labels: (N,) true class indices.
    """
    probs, labels = _checked(probs, labels)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin k holds (edges[k], edges[k + 1]]; a top probability of exactly 0 goes to the first.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    rows = []
    for k in range(bins):
        inside = index == k
        count = int(inside.sum())
        rows.append(
            {
                "lo": float(edges[k]),
                "hi": float(edges[k + 1]),
                "count": count,
                "confidence": float(confidence[inside].mean()) if count else None,
                "accuracy": float(correct[inside].mean()) if count else None,
            }
        )
    return rows


def expected_calibration_error(probs, labels, bins: int = ECE_BINS) -> float:
    """The ECE of (N, C) probabilities against (N,) labels, over ``bins`` equal-width bins."""
    rows = reliability_bins(probs, labels, bins)
    n = sum(r["count"] for r in rows)
    if n == 0:
        return 0.0
    return float(
        sum(r["count"] * abs(r["accuracy"] - r["confidence"]) for r in rows if r["count"]) / n
    )


def check_temperature(value, name: str = "temperature") -> float:
    """``value`` as a float if it is a finite number in TEMPERATURE_RANGE, else ValueError."""
    lo, hi = TEMPERATURE_RANGE
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return float(value)


def apply_temperature(probs, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / temperature)`` row by row: (N, C) probabilities in, (N, C) out."""
    temperature = check_temperature(temperature)
    probs = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0:
        return probs
    logits = np.log(np.clip(probs, 1e-30, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def average_views(views, temperature: float = 1.0) -> np.ndarray:
    """The mean over views of each view's (N, C) probabilities scaled by ``temperature``."""
    return sum(apply_temperature(v, temperature) for v in views) / len(views)


def negative_log_likelihood(probs, labels) -> float:
    """Mean ``-log p(true class)`` of (N, C) probabilities against (N,) labels."""
    probs, labels = _checked(probs, labels)
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, 1e-30, 1.0)).mean())


def fit_temperature(views, labels, *, tol: float = 1e-4) -> float:
    """The temperature minimising the NLL of ``average_views(views, T)`` against ``labels``.

    views: a list of (N, C) probability arrays of the same samples (one view: no test-time
    augmentation; the face and its mirror: flip), from samples the model never trained on.
    A golden-section search on log T over TEMPERATURE_RANGE (the NLL is unimodal in T for one
    view, and in practice for a few).
    """
    views = [np.asarray(v, dtype=np.float64) for v in views]
    labels = np.asarray(labels)

    def loss(log_t: float) -> float:
        return negative_log_likelihood(average_views(views, math.exp(log_t)), labels)

    lo, hi = (math.log(t) for t in TEMPERATURE_RANGE)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = lo + (1 - ratio) * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(a), loss(b)
    while hi - lo > tol:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = lo + (1 - ratio) * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(b)
    return float(math.exp((lo + hi) / 2))


def risk_coverage(probs, labels, thresholds) -> list[dict]:
    """For each ``min_confidence`` threshold: the share of samples whose top probability reaches
    it (``coverage``) and the accuracy on those (None when none does)."""
    probs, labels = _checked(probs, labels)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    rows = []
    for threshold in thresholds:
        kept = confidence >= threshold
        rows.append(
            {
                "min_confidence": float(threshold),
                "coverage": float(kept.mean()) if len(kept) else 0.0,
                "accuracy": float(correct[kept].mean()) if kept.any() else None,
            }
        )
    return rows


def coverage_at_accuracy(probs, labels, accuracy: float) -> dict:
    """The lowest ``min_confidence`` whose kept samples reach ``accuracy``, with its coverage
    (the most samples a threshold can keep at that accuracy); None values when none does."""
    probs, labels = _checked(probs, labels)
    confidence = probs.max(axis=1)
    order = np.argsort(-confidence, kind="stable")
    correct = (probs.argmax(axis=1) == labels)[order]
    running = np.cumsum(correct) / np.arange(1, len(correct) + 1)
    reached = np.flatnonzero(running >= accuracy)
    if not len(reached):
        return {"accuracy": accuracy, "min_confidence": None, "coverage": None}
    last = int(reached[-1])
    return {
        "accuracy": accuracy,
        "min_confidence": float(confidence[order][last]),
        "coverage": float((last + 1) / len(correct)),
    }


def flip_views(images: np.ndarray, tta: str) -> list[np.ndarray]:
    """The views of (N, H, W[, C]) images that ``tta`` averages: ``none`` the images, ``flip``
    the images and their mirror images (left and right swapped)."""
    if tta not in TTA_VIEWS:
        raise ValueError(f"unknown test-time augmentation {tta!r}; choose one of {list(TTA_VIEWS)}")
    images = np.asarray(images)
    if tta == "none":
        return [images]
    return [images, np.ascontiguousarray(images[:, :, ::-1])]
