"""The CNN's optimizer and its learning-rate schedule, a pure function of training progress."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ferlab.settings import CNNSolverSettings


def lr_factor(progress: float, schedule: str, warmup: float) -> float:
    """The learning rate's multiplier after ``progress`` (0..1) of all training steps."""
    if schedule == "constant":
        return 1.0
    if schedule == "onecycle" and progress < warmup:
        return 0.04 + 0.96 * progress / warmup
    start = warmup if schedule == "onecycle" else 0.0
    annealed = (progress - start) / max(1e-12, 1.0 - start)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, annealed)))


def make_optimizer(module: torch.nn.Module, solver: CNNSolverSettings) -> torch.optim.Optimizer:
    """AdamW or Nesterov SGD over ``module`` as the ``solver`` settings say; biases and other
    vectors (normalisation scales) get no weight decay."""
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": solver.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    lr = solver.lr
    if solver.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=solver.momentum, nesterov=True)


def set_lr(
    optimizer: torch.optim.Optimizer, solver: CNNSolverSettings, step: int, steps_per_epoch: int
) -> float:
    """Set every parameter group's learning rate for ``step`` (0-based, counted over the whole
    run) of ``solver.epochs * steps_per_epoch``; return it."""
    total = steps_per_epoch * solver.epochs
    lr = solver.lr * lr_factor(step / total, solver.schedule, solver.warmup)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
