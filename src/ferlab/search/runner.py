"""The driver: asks Optuna for trials, keeps the workers busy, records outcomes, counts globally.

The driver's cost per trial does not grow with the study. It reads the whole study once at the
start, then keeps its own tally of trial states and of the completed trials' curves (for the
median rule) as it asks and records; only a PostgreSQL study, which other drivers and the
heartbeat sweep may change too, is read again, every :data:`RESYNC_S` seconds and near the end.
A random trial is written in one storage write with its parameters and config.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections import Counter

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from ferlab.common.progress import show_bars
from ferlab.errors import FerlabError
from ferlab.evaluation.metrics import percent
from ferlab.search.pruning import CompletedCurves, MedianRule
from ferlab.search.space import SearchSpace
from ferlab.search.storage import create_running_trial, is_rdb
from ferlab.search.trial import TrialFn, TrialOutcome, TrialTask, execute_trial

# Trials that count towards a study's total: finished ones and those running somewhere now.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# A search whose trials keep failing (a setting no trial can train with) stops after this many
# failures in a row, or as many as there are workers if more (a lost machine fails all of its
# trials at once), showing the last error, instead of failing trials for ever.
MAX_FAILURES_IN_A_ROW = 10
WAIT_S = 1.0  # how often to look again while trials run elsewhere
# How often a PostgreSQL study is read again (other drivers, stale trials failed by heartbeat).
RESYNC_S = 5.0
# Our workers send heartbeats themselves (ferlab.search.trial), outside Study.optimize.


class SearchFailed(FerlabError):
    """Every recent trial failed: the settings, not bad luck, are at fault."""


def trial_seed(seed: int, number: int) -> int:
    """The random-sampler seed of trial ``number``: its parameters depend only on (seed, number)."""
    return (seed * 1_000_003 + number) % (2**32)


def count(study: optuna.Study, states) -> int:
    """How many of the study's trials are in ``states`` (reads the whole study)."""
    return len(study.get_trials(deepcopy=False, states=states))


class Tally:
    """The driver's running view of a study: each trial's state, counts, curves, the best value."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        self.read()

    def read(self) -> None:
        """Read the whole study (at the start, and now and then for a shared database)."""
        trials = self.study.get_trials(deepcopy=False)
        self.states = {t.number: t.state for t in trials}
        self.counts = Counter(self.states.values())
        self.curves = CompletedCurves()
        self.best: float | None = None
        for t in trials:
            if t.state == TrialState.COMPLETE:
                self._completed(t.intermediate_values, t.value)
        self.next_number = len(trials)
        self.read_at = time.monotonic()

    def _completed(self, curve: dict[int, float], value: float | None) -> None:
        self.curves.add(curve)
        if value is not None and (self.best is None or value > self.best):
            self.best = value

    def set(self, number: int, state: TrialState, outcome: TrialOutcome | None = None) -> None:
        """Record that trial ``number`` is now in ``state``."""
        old = self.states.get(number)
        if old is not None:
            self.counts[old] -= 1
        self.states[number] = state
        self.counts[state] += 1
        self.next_number = max(self.next_number, number + 1)
        if state == TrialState.COMPLETE and outcome is not None:
            self._completed(outcome.curve, outcome.value)

    def total(self, states) -> int:
        return sum(self.counts[s] for s in states)


def _retry(study: optuna.Study, trial_id: int, *, always: bool = False) -> None:
    """Queue a failed trial's parameters again (once, unless it was only interrupted)."""
    frozen = study._storage.get_trial(trial_id)
    if always or "retry_of" not in frozen.user_attrs:
        study.enqueue_trial(frozen.params, user_attrs={"retry_of": frozen.number})


def fail_stale(study: optuna.Study) -> None:
    """Fail (and queue again once) RUNNING trials whose heartbeats stopped (RDB storages)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def recover_orphans(study: optuna.Study, storage: str) -> int:
    """Fail (and retry once) trials left RUNNING by a killed driver; return how many."""
    if is_rdb(storage):
        # Heartbeats tell which RUNNING trials are dead; live ones may belong to another driver.
        before = count(study, (TrialState.FAIL,))
        fail_stale(study)
        return count(study, (TrialState.FAIL,)) - before
    # A journal study has one driver at a time, so whatever is RUNNING now was orphaned.
    orphans = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for frozen in orphans:
        optuna.trial.Trial(study, frozen._trial_id).set_user_attr(
            "error", "its search was interrupted"
        )
        study.tell(frozen.number, state=TrialState.FAIL)
        # A driver killed while sampling leaves partial parameters: only a fully sampled trial
        # (its config recorded) is worth retrying as it was.
        if "config" in frozen.user_attrs:
            _retry(study, frozen._trial_id, always=True)
    return len(orphans)


def record(
    study: optuna.Study,
    trial_id: int,
    outcome: TrialOutcome,
    *,
    interrupted: bool = False,
) -> TrialState | None:
    """Store a worker's outcome (the driver is the only writer of final states).

    Returns the state written, or None when the trial had already been finished elsewhere.
    The trial's duration is Optuna's own (``datetime_complete - datetime_start``).
    """
    state, value = final_state(outcome)
    storage = study._storage
    try:
        if outcome.message and not outcome.message.startswith("pruned after"):
            key = "error" if state == TrialState.FAIL else "pruned_reason"
            storage.set_trial_user_attr(trial_id, key, outcome.message)
        # What study.tell() writes, without reading the trial back twice (the driver knows it).
        storage.set_trial_state_values(trial_id, state, None if value is None else [value])
    except (RuntimeError, ValueError) as exc:
        # Another process (heartbeat sweep) already finished this trial; keep its record.
        print(f"ferlab: note: trial id {trial_id}: {exc}", file=sys.stderr)
        return None
    if state == TrialState.FAIL:
        _retry(study, trial_id, always=interrupted)
    return state


def final_state(outcome: TrialOutcome) -> tuple[TrialState, float | None]:
    """The state and value Optuna's ``tell`` would store for ``outcome``.

    A complete trial needs a finite value (else it failed); a pruned one keeps its last
    reported value.
    """
    if outcome.state == "complete":
        if outcome.value is not None and math.isfinite(outcome.value):
            return TrialState.COMPLETE, outcome.value
        return TrialState.FAIL, None
    if outcome.state == "pruned":
        last = outcome.curve[max(outcome.curve)] if outcome.curve else None
        return TrialState.PRUNED, last if last is not None and math.isfinite(last) else None
    return TrialState.FAIL, None


class Progress:
    """A tqdm bar of finished trials with pruned/failed counts and the best value so far."""

    def __init__(self, study: optuna.Study, total: int, tally: Tally, enabled: bool) -> None:
        self.tally = tally
        self.bar = tqdm(
            total=total,
            initial=min(total, tally.total(FINISHED)),
            desc=study.study_name,
            unit="trial",
            disable=not show_bars(enabled),
            file=sys.stderr,
            dynamic_ncols=True,
        )
        self.refresh()

    def refresh(self) -> None:
        counts, best = self.tally.counts, self.tally.best
        self.bar.n = min(self.bar.total, self.tally.total(FINISHED))
        self.bar.set_postfix(
            pruned=counts[TrialState.PRUNED],
            failed=counts[TrialState.FAIL],
            best=percent(best) if best is not None else "-",
        )

    def close(self) -> None:
        self.bar.close()


def ask(study: optuna.Study, space: SearchSpace, sampler: str, seed: int, tally: Tally):
    """A new trial, every parameter sampled here in the driver; returns (trial id, number, config).

    A random trial is drawn from ``(seed, number)`` and written in one storage write; a TPE
    trial, or a queued one (a retry), goes through Optuna's ``ask``.
    """
    if sampler == "random" and tally.counts[TrialState.WAITING] == 0:
        params, distributions = space.sample(trial_seed(seed, tally.next_number))
        config = space.trial_config(space.values_from_params(params))
        trial_id, number = create_running_trial(
            study._storage, study._study_id, params, distributions, {"config": config}
        )
        return trial_id, number, config
    if sampler == "random":
        study.sampler = optuna.samplers.RandomSampler(seed=trial_seed(seed, tally.next_number))
    trial = study.ask()
    if tally.counts[TrialState.WAITING]:
        tally.read()  # the queue was (probably) popped: learn which trial is still waiting
    values = space.suggest(trial)
    config = space.trial_config(values)
    trial.set_user_attr("config", config)
    if is_rdb_storage(study._storage):
        # Beat once now: if this driver dies before a worker takes the trial, the trial still
        # goes stale after the grace period and is retried by the next driver.
        study._storage.record_heartbeat(trial._trial_id)
    return trial._trial_id, trial.number, config


def is_rdb_storage(storage) -> bool:
    return isinstance(storage, optuna.storages._CachedStorage | optuna.storages.RDBStorage)


def run_trials(
    study: optuna.Study,
    storage: str,
    space: SearchSpace,
    n_trials: int,
    executor,
    *,
    sampler: str = "random",
    pruner: str = "median",
    seed: int = 0,
    trial_fn: TrialFn | None = None,
    progress: bool = True,
    timeout: float | None = None,
    trial_timeout: float | None = None,
) -> optuna.Study:
    """Run trials until ``n_trials`` have finished (complete or pruned) in the study, globally.

    With ``timeout`` (seconds), no trial is started after that time; running ones finish.
    A trial with no result ``trial_timeout`` seconds after it started on its worker (hung) is
    failed and queued again once, like a crashed one.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    _prepare(study, storage, sampler, seed)
    shared = is_rdb(storage)
    tally = Tally(study)
    bar = Progress(study, n_trials, tally, progress)
    pending: dict = {}
    failures, last_error, waiting_noted = 0, "", False
    try:
        while True:
            if shared and (
                time.monotonic() - tally.read_at >= RESYNC_S
                # Near the end, other drivers' trials decide whether one more may start.
                or n_trials - tally.total(COUNTED) <= executor.slots
            ):
                fail_stale(study)
                tally.read()
            out_of_time = deadline is not None and time.monotonic() >= deadline
            while (
                not out_of_time
                and len(pending) < executor.slots
                and tally.total(COUNTED) < n_trials
            ):
                trial_id, number, task = _next_task(
                    study, storage, space, sampler, seed, pruner, tally
                )
                pending[executor.submit(execute_trial, task, trial_fn)] = (trial_id, number)
            if not pending:
                if out_of_time or tally.total(FINISHED) >= n_trials:
                    break
                # The rest are RUNNING elsewhere: another driver's, or a killed driver's whose
                # heartbeats have not yet expired (then they are failed and retried here).
                if not waiting_noted:
                    running = count(study, (TrialState.RUNNING,))
                    print(
                        f"ferlab: waiting for {running} trial(s) running elsewhere", file=sys.stderr
                    )
                    waiting_noted = True
                time.sleep(WAIT_S)
                tally.read()
                continue
            for outcome in _collect(study, tally, executor, pending, shared, trial_timeout):
                failed = outcome.state == "fail"
                failures, last_error = (failures + 1, outcome.message) if failed else (0, "")
            bar.refresh()
            if failures >= max(MAX_FAILURES_IN_A_ROW, executor.slots):
                raise SearchFailed(
                    f"stopped the search after {failures} trials in a row failed; "
                    f"the last one: {last_error or 'no message'}"
                )
    except BaseException:
        _requeue(study, executor, pending)
        raise
    finally:
        bar.refresh()
        bar.close()
    return study


def _requeue(study: optuna.Study, executor, pending: dict) -> None:
    """Interrupted (Ctrl-C or an error): the unfinished trials are queued again, nothing lost."""
    executor.cancel(pending)
    for trial_id, _number in pending.values():
        outcome = TrialOutcome("fail", message="its search was interrupted")
        record(study, trial_id, outcome, interrupted=True)


def _prepare(study: optuna.Study, storage: str, sampler: str, seed: int) -> None:
    """Before the first trial: TPE seeded by the trials already made, and the trials of a
    killed driver failed and queued again."""
    if sampler == "tpe":
        study.sampler = optuna.samplers.TPESampler(
            seed=trial_seed(seed, len(study.get_trials(deepcopy=False))),
            multivariate=True,
            constant_liar=True,
        )
    recovered = recover_orphans(study, storage)
    if recovered:
        print(
            f"ferlab: {recovered} interrupted trial(s) marked failed and queued again",
            file=sys.stderr,
        )


def _next_task(study, storage: str, space, sampler: str, seed: int, pruner: str, tally: Tally):
    """(trial id, number, TrialTask) of a new trial asked of the study and counted as running."""
    trial_id, number, config = ask(study, space, sampler, seed, tally)
    tally.set(number, TrialState.RUNNING)
    rule = MedianRule(tally.curves.medians() if pruner == "median" else {})
    return (
        trial_id,
        number,
        TrialTask(storage, study.study_name, trial_id, number, config, pruner, rule),
    )


def _collect(study, tally, executor, pending: dict, shared: bool, trial_timeout: float | None):
    """Wait for the first finished trials, record them; also fail hung ones. Yields outcomes.

    A trial hangs when it has run ``trial_timeout`` seconds since it started on its worker
    (time spent waiting for a free worker does not count).
    """
    waits = [RESYNC_S] if shared else []
    # A shared study is looked at again now and then even while every trial runs: stale
    # trials (a lost worker) are failed and retried, other drivers' trials counted.
    if trial_timeout is not None:
        starts = [executor.started_at(trial_id) for trial_id, _ in pending.values()]
        known = [t for t in starts if t is not None]
        first_due = min(known) + trial_timeout - time.monotonic() if known else WAIT_S
        waits.append(max(0.0, min(first_due, WAIT_S * 5)))
    for future in executor.wait_first(pending, timeout=min(waits) if waits else None):
        outcome = executor.outcome(future)
        trial_id, number = pending.pop(future)
        _record_and_count(study, tally, trial_id, number, outcome)
        yield outcome
    if trial_timeout is None:
        return
    now = time.monotonic()
    for future, (trial_id, number) in list(pending.items()):
        started = executor.started_at(trial_id)
        if started is None or now - started < trial_timeout:
            continue
        executor.cancel([future])
        del pending[future]
        outcome = TrialOutcome("fail", message=f"no result after {trial_timeout:g} s (hung?)")
        _record_and_count(study, tally, trial_id, number, outcome)
        yield outcome


def _record_and_count(
    study: optuna.Study, tally: Tally, trial_id: int, number: int, outcome: TrialOutcome
) -> None:
    state = record(study, trial_id, outcome)
    if state is None:
        tally.read()  # finished elsewhere: learn how
        return
    tally.set(number, state, outcome)
    if state == TrialState.FAIL:
        tally.read()  # rare: learn whether record() queued it again
