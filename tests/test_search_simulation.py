"""The original report's scale on a real Dask scheduler and PostgreSQL (slow: minutes).

14,000 trials over 200 simulated workers that crash or hang now and then: exactly 14,000
finish, none twice, and every crashed or hung trial is failed and retried once
(benchmarks/search_simulation.py holds the simulation and its rules). FERLAB_SIMULATION_TRIALS
runs a smaller one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from test_search import POSTGRES, _postgres_ready

# The workers import the trial function by name, from the benchmark's folder (on sys.path, which
# Dask's spawned worker processes inherit).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.slow
@pytest.mark.timeout(3 * 3600)
def test_14000_trials_over_200_workers_finish_exactly_once_each():
    reason = _postgres_ready()
    if reason:
        pytest.skip(reason)
    import search_simulation

    n_trials = int(os.environ.get("FERLAB_SIMULATION_TRIALS", "14000"))
    # simulate() checks the rules itself: exactly n_trials finished, none twice, retries.
    # The report-scale rates (1% crash, 0.5% hang), raised so that a small run has some of each.
    rates = {"crash_rate": max(0.01, 10 / n_trials), "hang_rate": max(0.005, 5 / n_trials)}
    record = search_simulation.simulate(POSTGRES, n_trials=n_trials, progress=False, **rates)
    assert record["crashed"] > 0 and record["hung"] > 0  # the faults really happened
    assert record["retried"] == record["crashed"] + record["hung"] - record["failed_retries"]
