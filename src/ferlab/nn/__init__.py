"""The NumPy neural-network engine: layers, fully connected nets, update rules and the Solver.

Names load on first use, so that importing a part of the engine (``ferlab.nn.settings``, which
the config schema reads) imports nothing else of it, and nothing of the ``lab`` extra (tqdm).
"""

import importlib

_HOMES = {
    "FullyConnectedNet": "ferlab.nn.fc_net",
    "Preprocessor": "ferlab.nn.preprocess",
    "Solver": "ferlab.nn.solver",
    "load_fully_connected": "ferlab.nn.model_io",
    **{
        name: "ferlab.nn.layers"
        for name in (
            "dropout_backward",
            "dropout_forward",
            "linear_backward",
            "linear_forward",
            "relu_backward",
            "relu_forward",
            "softmax",
            "softmax_loss",
        )
    },
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'ferlab.nn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
