"""A NumPy Solver's checkpoint: everything a resumed run needs to go on as if never stopped.

Parameters, the best epoch's parameters, the optimizer's state and settings, the RNG state, the
history and the early-stopping state, in one ``.npz`` with a JSON header (no pickle), written
atomically (:func:`ferlab.common.arrays.write_npz`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from ferlab.errors import ModelFileError
from ferlab.nn.optim import get_update_rule
from ferlab.nn.tracking import CHECKPOINT_STEM, BestEpoch, restored_history

CHECKPOINT_NAME = f"{CHECKPOINT_STEM}.npz"
CHECKPOINT_FORMAT = "ferlab-checkpoint"


class SolverState(Protocol):
    """What a checkpoint saves and restores of a solver (:class:`ferlab.nn.Solver`)."""

    model: object  # a FullyConnectedNet: params, config(), hidden_dims, input_dim
    optimizer: str
    update_rule: object
    optim_config: dict
    optim_state: dict[str, dict]
    epoch: int
    epochs: int
    best: BestEpoch  # the best epoch, its parameters (best.kept) and early stopping
    rng: np.random.Generator
    history: dict[str, list]


def solver_state(solver: SolverState) -> tuple[dict, dict[str, np.ndarray]]:
    """The checkpoint of ``solver``: its JSON header and its arrays by name
    (``param/W1``, ``best/W1``, ``optim/W1/m``)."""
    meta = {
        "format": CHECKPOINT_FORMAT,
        "model": solver.model.config(),
        "optimizer": solver.optimizer,
        "optim_config": solver.optim_config,
        "epoch": solver.epoch,
        "epochs": solver.epochs,
        **solver.best.state(),
        "rng_state": solver.rng.bit_generator.state,
        "history": solver.history,
        "optim_scalars": {},
    }
    arrays: dict[str, np.ndarray] = {}
    for name, value in solver.model.params.items():
        arrays[f"param/{name}"] = value
    for name, value in (solver.best.kept or {}).items():
        arrays[f"best/{name}"] = value
    for name, state in solver.optim_state.items():
        for key, value in state.items():
            arrays[f"optim/{name}/{key}"] = np.asarray(value)
    return meta, arrays


def save_checkpoint(solver: SolverState, path: str | os.PathLike) -> Path:
    """Write ``solver``'s checkpoint atomically to ``path``; return the path."""
    from ferlab.common.arrays import write_npz

    meta, arrays = solver_state(solver)
    return write_npz(path, meta, arrays)


def load_checkpoint(solver: SolverState, path: str | os.PathLike, keys: Sequence[str]) -> None:
    """Restore into ``solver`` and its model what :func:`save_checkpoint` wrote; the history
    under ``keys`` (a key the checkpoint lacks, such as train_l2 before it was recorded, holds
    NaN)."""
    from ferlab.common.arrays import read_npz

    meta, arrays = read_npz(path, expected_format=CHECKPOINT_FORMAT)
    model = solver.model
    if (
        meta["model"]["hidden_dims"] != model.hidden_dims
        or meta["model"]["input_dim"] != model.input_dim
    ):
        raise ModelFileError(f"{path}: the checkpoint was written for another architecture")
    for name in model.params:
        model.params[name][...] = arrays[f"param/{name}"]
    best = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("best/")}
    solver.best.kept = best or None
    solver.optim_state = {name: {} for name in model.params}
    for key, value in arrays.items():
        if key.startswith("optim/"):
            _, name, field = key.split("/", 2)
            solver.optim_state[name][field] = value.copy()
    solver.optimizer = meta["optimizer"]
    solver.update_rule = get_update_rule(solver.optimizer)
    solver.optim_config = dict(meta["optim_config"])
    solver.epoch = int(meta["epoch"])
    solver.best.load(meta)
    solver.rng.bit_generator.state = meta["rng_state"]
    solver.history = restored_history(meta["history"], keys)
