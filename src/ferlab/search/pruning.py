"""The median rule, kept by the driver: pruning that costs the same at 14,000 trials as at 10.

Optuna's ``MedianPruner`` reads every completed trial of the study at every reported epoch of
every trial, so its cost grows with the study. Here the driver keeps the completed trials'
per-epoch values in sorted lists, updated as trials finish, and hands each new trial the medians
as they stand when it starts; the trial then decides on its own, reading nothing. The rule is
Optuna's (``MedianPruner(n_startup_trials=5, n_warmup_steps=2)``), over the trials completed
before the trial started.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

N_STARTUP_TRIALS = 5  # no pruning until this many trials have completed
N_WARMUP_STEPS = 2  # nor before this epoch


@dataclass
class CompletedCurves:
    """The per-epoch validation accuracies of completed trials, sorted by value at each epoch."""

    trials: int = 0
    by_step: dict[int, list[float]] = field(default_factory=dict)

    def add(self, curve: dict[int, float]) -> None:
        """Count one completed trial and its ``{epoch: value}`` reports."""
        self.trials += 1
        for step, value in curve.items():
            if not math.isnan(value):
                bisect.insort(self.by_step.setdefault(int(step), []), float(value))

    def medians(self) -> dict[int, float]:
        """``{epoch: median}`` once enough trials have completed; empty before (no pruning)."""
        if self.trials < N_STARTUP_TRIALS:
            return {}
        return {step: _median(values) for step, values in self.by_step.items() if values}


def _median(ordered: list[float]) -> float:
    """The median of sorted values, interpolated as ``numpy.percentile`` does."""
    middle, odd = divmod(len(ordered), 2)
    return ordered[middle] if odd else (ordered[middle - 1] + ordered[middle]) / 2


@dataclass(frozen=True)
class MedianRule:
    """Prune a trial whose best value so far is below the median of completed trials' values
    at the same epoch (``medians``, as handed over by the driver)."""

    medians: dict[int, float] = field(default_factory=dict)

    def should_prune(self, step: int, curve: dict[int, float]) -> bool:
        """Whether a trial that reported ``curve`` (``{epoch: value}``, up to ``step``) stops."""
        if step < N_WARMUP_STEPS or step not in self.medians:
            return False
        values = [v for v in curve.values() if not math.isnan(v)]
        if not values:
            return True
        return max(values) < self.medians[step]
