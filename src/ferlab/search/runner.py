"""The driver: asks Optuna for trials, keeps the workers busy, records outcomes, counts globally."""

from __future__ import annotations

import sys
import time

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from ferlab.errors import FerlabError
from ferlab.metrics import percent
from ferlab.progress import show_bars
from ferlab.search.space import SearchSpace
from ferlab.search.storage import is_rdb
from ferlab.search.trial import TrialFn, TrialOutcome, TrialTask, execute_trial

# Trials that count towards a study's total: finished ones and those running somewhere now.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# A search whose trials keep failing (a setting no trial can train with) stops after this many
# failures in a row, showing the last error, instead of failing trials for ever.
MAX_FAILURES_IN_A_ROW = 10
WAIT_S = 1.0  # how often to look again while trials run elsewhere
# Our workers send heartbeats themselves (ferlab.search.trial), outside Study.optimize.


class SearchFailed(FerlabError):
    """Every recent trial failed: the settings, not bad luck, are at fault."""


def trial_seed(seed: int, number: int) -> int:
    """The random-sampler seed of trial ``number``: its parameters depend only on (seed, number)."""
    return (seed * 1_000_003 + number) % (2**32)


def count(study: optuna.Study, states) -> int:
    """How many of the study's trials are in ``states``."""
    return len(study.get_trials(deepcopy=False, states=states))


def _retry(study: optuna.Study, number: int, *, always: bool = False) -> None:
    """Queue a failed trial's parameters again (once, unless it was only interrupted)."""
    frozen = study.get_trials(deepcopy=False)[number]
    if always or "retry_of" not in frozen.user_attrs:
        study.enqueue_trial(frozen.params, user_attrs={"retry_of": number})


def recover_orphans(study: optuna.Study, storage: str) -> int:
    """Fail (and retry once) trials left RUNNING by a killed driver; return how many."""
    if is_rdb(storage):
        # Heartbeats tell which RUNNING trials are dead; live ones may belong to another driver.
        before = count(study, (TrialState.FAIL,))
        optuna.storages.fail_stale_trials(study)
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
            _retry(study, frozen.number, always=True)
    return len(orphans)


def record(
    study: optuna.Study, trial: optuna.Trial, outcome: TrialOutcome, *, interrupted: bool = False
) -> None:
    """Store a worker's outcome in the study (the driver is the only writer of final states)."""
    trial.set_user_attr("seconds", round(outcome.seconds, 2))
    if outcome.message:
        trial.set_user_attr(
            "error" if outcome.state == "fail" else "pruned_reason", outcome.message
        )
    try:
        if outcome.state == "complete":
            study.tell(trial, outcome.value)
        elif outcome.state == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, state=TrialState.FAIL)
            _retry(study, trial.number, always=interrupted)
    except (RuntimeError, ValueError) as exc:
        # Another process (heartbeat sweep) already finished this trial; keep its record.
        print(f"ferlab: note: trial {trial.number}: {exc}", file=sys.stderr)


class Progress:
    """A tqdm bar of finished trials with pruned/failed counts and the best value so far."""

    def __init__(self, study: optuna.Study, total: int, enabled: bool) -> None:
        self.study = study
        self.bar = tqdm(
            total=total,
            initial=min(total, count(study, FINISHED)),
            desc=study.study_name,
            unit="trial",
            disable=not show_bars(enabled),
            file=sys.stderr,
            dynamic_ncols=True,
        )
        self.refresh()

    def refresh(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        states = [t.state for t in trials]
        values = [t.value for t in trials if t.state == TrialState.COMPLETE]
        self.bar.n = min(
            self.bar.total, states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED)
        )
        self.bar.set_postfix(
            pruned=states.count(TrialState.PRUNED),
            failed=states.count(TrialState.FAIL),
            best=percent(max(values)) if values else "-",
        )

    def close(self) -> None:
        self.bar.close()


def ask(study: optuna.Study, space: SearchSpace, sampler: str, seed: int):
    """A new trial with every parameter sampled here in the driver; returns (trial, config)."""
    if sampler == "random":
        study.sampler = optuna.samplers.RandomSampler(
            seed=trial_seed(seed, len(study.get_trials(deepcopy=False)))
        )
    trial = study.ask()
    values = space.suggest(trial)
    config = space.trial_config(values)
    trial.set_user_attr("config", config)
    return trial, config


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
) -> optuna.Study:
    """Run trials until ``n_trials`` have finished (complete or pruned) in the study, globally.

    With ``timeout`` (seconds), no trial is started after that time; running ones finish.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
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
    bar = Progress(study, n_trials, progress)
    pending: dict = {}
    failures, last_error, waiting_noted = 0, "", False
    try:
        while True:
            if is_rdb(storage) and len(pending) < executor.slots:
                optuna.storages.fail_stale_trials(study)
            out_of_time = deadline is not None and time.monotonic() >= deadline
            while (
                not out_of_time and len(pending) < executor.slots and count(study, COUNTED) < n_trials
            ):
                trial, config = ask(study, space, sampler, seed)
                if is_rdb(storage):
                    # Beat once now: if this driver dies before a worker takes the trial, the
                    # trial still goes stale after the grace period and is retried by the next.
                    study._storage.record_heartbeat(trial._trial_id)
                task = TrialTask(
                    storage, study.study_name, trial._trial_id, trial.number, config, pruner
                )
                pending[executor.submit(execute_trial, task, trial_fn)] = trial
            if not pending:
                if out_of_time or count(study, FINISHED) >= n_trials:
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
                continue
            for future in executor.wait_first(pending):
                outcome = executor.outcome(future)
                record(study, pending.pop(future), outcome)
                failed = outcome.state == "fail"
                failures, last_error = (failures + 1, outcome.message) if failed else (0, "")
            bar.refresh()
            if failures >= MAX_FAILURES_IN_A_ROW:
                raise SearchFailed(
                    f"stopped the search after {failures} trials in a row failed; "
                    f"the last one: {last_error or 'no message'}"
                )
    except BaseException:
        # Interrupted (Ctrl-C or an error): queue the unfinished trials again so nothing is lost.
        executor.cancel(pending)
        for trial in pending.values():
            outcome = TrialOutcome("fail", message="its search was interrupted")
            record(study, trial, outcome, interrupted=True)
        raise
    finally:
        bar.refresh()
        bar.close()
    return study
