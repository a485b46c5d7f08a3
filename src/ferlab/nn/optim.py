"""Update rules: ``update(w, dw, state, config) -> w``, each keeping its own per-parameter state.

``state`` is a dict owned by one parameter (filled on first use); ``config`` holds the
hyperparameters (``lr`` and the rule's own). Weights are updated in place and returned.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

UpdateRule = Callable[[np.ndarray, np.ndarray, dict, dict], np.ndarray]


def sgd(w: np.ndarray, dw: np.ndarray, state: dict, config: dict) -> np.ndarray:
    """Plain stochastic gradient descent."""
    w -= w.dtype.type(config["lr"]) * dw
    return w


def sgd_momentum(w: np.ndarray, dw: np.ndarray, state: dict, config: dict) -> np.ndarray:
    """SGD with classical momentum: v = mu * v - lr * dw; w += v."""
    v = state.get("velocity")
    if v is None:
        v = state["velocity"] = np.zeros_like(w)
    v *= w.dtype.type(config.get("momentum", 0.9))
    v -= w.dtype.type(config["lr"]) * dw
    w += v
    return w


def nesterov(w: np.ndarray, dw: np.ndarray, state: dict, config: dict) -> np.ndarray:
    """Nesterov momentum in the look-ahead-free form: w += -mu * v_prev + (1 + mu) * v."""
    mu = w.dtype.type(config.get("momentum", 0.9))
    v = state.get("velocity")
    if v is None:
        v = state["velocity"] = np.zeros_like(w)
    w -= mu * v
    v *= mu
    v -= w.dtype.type(config["lr"]) * dw
    w += (1 + mu) * v
    return w


def adam(w: np.ndarray, dw: np.ndarray, state: dict, config: dict) -> np.ndarray:
    """Adam with bias correction."""
    beta1 = config.get("beta1", 0.9)
    beta2 = config.get("beta2", 0.999)
    eps = config.get("eps", 1e-8)
    if "m" not in state:
        state["m"] = np.zeros_like(w)
        state["v"] = np.zeros_like(w)
        state["t"] = np.zeros((), dtype=np.int64)
    state["t"] = state["t"] + 1
    t = int(state["t"])
    m, v = state["m"], state["v"]
    m *= w.dtype.type(beta1)
    m += w.dtype.type(1 - beta1) * dw
    v *= w.dtype.type(beta2)
    v += w.dtype.type(1 - beta2) * (dw * dw)
    step = w.dtype.type(config["lr"] / (1 - beta1**t))
    denom = np.sqrt(v)
    denom *= w.dtype.type(1 / np.sqrt(1 - beta2**t))
    denom += w.dtype.type(eps)
    w -= step * m / denom
    return w


UPDATE_RULES: dict[str, UpdateRule] = {
    "sgd": sgd,
    "sgd_momentum": sgd_momentum,
    "momentum": sgd_momentum,
    "nesterov": nesterov,
    "adam": adam,
}


def get_update_rule(name: str) -> UpdateRule:
    """Look an update rule up by name."""
    try:
        return UPDATE_RULES[name]
    except KeyError:
        raise ValueError(
            f"unknown optimizer {name!r}; choose one of {sorted(UPDATE_RULES)}"
        ) from None
