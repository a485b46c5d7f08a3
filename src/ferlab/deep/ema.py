"""An exponential moving average (EMA) of a network's weights, updated after every optimizer step."""

from __future__ import annotations

import copy

import torch


class WeightAverage:
    """A copy of ``module`` whose parameters are an exponential moving average of its weights.

    After ``k`` updates with parameters ``p_1 .. p_k`` the average is
    ``sum(decay**(k - i) * p_i) / sum(decay**(k - i))`` (bias-corrected, as Adam's moments are): the
    weights the network started from carry no weight, so short runs are not pulled back to them.
    Buffers (BatchNorm's running statistics) are copied from the latest weights, not averaged.
    """

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.module = copy.deepcopy(module).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)

    def newest_weight(self) -> float:
        """The weight of the newest parameters in the next update: 1 at the first, then -> 1 - decay."""
        k = self.updates + 1
        return (1.0 - self.decay) / (1.0 - self.decay**k)

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        """Fold ``module``'s current parameters into the average; copy its buffers."""
        weight = self.newest_weight()
        live = dict(module.named_parameters())
        for name, average in self.module.named_parameters():
            average.lerp_(live[name].detach(), weight)
        buffers = dict(module.named_buffers())
        for name, buffer in self.module.named_buffers():
            buffer.copy_(buffers[name])
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged network's state (parameters and buffers), as the model file stores it."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        """Restore a state and update count written by a checkpoint."""
        self.module.load_state_dict(state, strict=True)
        self.updates = int(updates)
