"""Names kept at their old address: the fully connected run lives in :mod:`ferlab.runs.fc`.

``ferlab.compare``, ``ferlab.search`` and the benchmarks import these from here until they
import them from there.
"""

from ferlab.data.split import load_splits
from ferlab.runs.fc import (
    FC_MAY_CHANGE,
    Features,
    accuracy,
    build_model,
    build_solver,
    make_features,
    run_training,
)

__all__ = [
    "FC_MAY_CHANGE",
    "Features",
    "accuracy",
    "build_model",
    "build_solver",
    "load_splits",
    "make_features",
    "run_training",
]
