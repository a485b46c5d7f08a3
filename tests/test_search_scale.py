"""The driver at scale: pruning, trial creation and study reads that do not grow with the study."""

from __future__ import annotations

import functools
import gc
import math
import os
import time
import uuid

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from ferlab.search.cluster import InlineExecutor
from ferlab.search.pruning import CompletedCurves, MedianRule
from ferlab.search.runner import final_state
from ferlab.search.space import parse_space
from ferlab.search.storage import create_running_trial, open_storage
from ferlab.search.study import search
from ferlab.search.trial import TrialOutcome
from test_search import POSTGRES, _postgres_ready, fake_trial, tiny_space


def _curve(rng: np.random.Generator, epochs: int) -> dict[int, float]:
    values = rng.uniform(0.2, 0.6, size=epochs).round(2)  # rounded: ties with the median occur
    if rng.random() < 0.1:
        values[rng.integers(epochs)] = np.nan
    return {step + 1: float(v) for step, v in enumerate(values)}


def test_the_median_rule_prunes_exactly_when_optunas_median_pruner_does():
    rng = np.random.default_rng(0)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    decisions = 0
    for n_completed in (0, 3, 4, 5, 6, 11, 40):
        study = optuna.create_study(direction="maximize")
        curves = CompletedCurves()
        for _ in range(n_completed):
            curve = _curve(rng, int(rng.integers(1, 8)))
            study.add_trial(
                optuna.trial.create_trial(
                    value=0.5, intermediate_values=curve, state=TrialState.COMPLETE
                )
            )
            curves.add(curve)
        rule = MedianRule(curves.medians())
        for _ in range(30):
            full = _curve(rng, 8)
            for step in range(1, 9):
                so_far = {s: v for s, v in full.items() if s <= step}
                running = optuna.trial.create_trial(
                    state=TrialState.RUNNING, intermediate_values=so_far
                )
                expected = pruner.prune(study, running)
                assert rule.should_prune(step, so_far) == expected, (n_completed, step, so_far)
                decisions += expected
    assert decisions > 50  # the comparison covered both answers


def test_final_states_follow_optunas_tell():
    assert final_state(TrialOutcome("complete", 0.4)) == (TrialState.COMPLETE, 0.4)
    assert final_state(TrialOutcome("complete", math.nan)) == (TrialState.FAIL, None)
    pruned = TrialOutcome("pruned", curve={1: 0.3, 2: 0.25})
    assert final_state(pruned) == (TrialState.PRUNED, 0.25)
    assert final_state(TrialOutcome("pruned")) == (TrialState.PRUNED, None)
    assert final_state(TrialOutcome("fail", message="boom")) == (TrialState.FAIL, None)


def _storages(tmp_path) -> list[str]:
    storages = [str(tmp_path / "study.journal")]
    if _postgres_ready() is None:
        storages.append(POSTGRES)
    return storages


def test_a_random_trial_is_written_in_one_go_and_reads_back_as_optunas_own(tmp_path):
    space = parse_space(tiny_space())
    params, distributions = space.sample(7)
    assert space.sample(7) == (params, distributions)  # drawn from the seed alone
    assert space.sample(8)[0] != params
    for name, value in params.items():
        assert distributions[name]._contains(distributions[name].to_internal_repr(value))
    for spec in _storages(tmp_path):
        name = f"ferlab-test-{uuid.uuid4().hex[:8]}"
        study = optuna.create_study(study_name=name, storage=open_storage(spec))
        try:
            template = optuna.trial.create_trial(
                state=TrialState.RUNNING, params=params, distributions=distributions,
                user_attrs={"config": {"a": [1, 2]}},
            )  # fmt: skip
            optuna_id = study._storage.create_new_trial(study._study_id, template_trial=template)
            ours_id, number = create_running_trial(
                study._storage, study._study_id, params, distributions, {"config": {"a": [1, 2]}}
            )
            assert number == 1
            # Interleaved with Optuna's own creations, numbers still count the earlier trials.
            more = []
            for _ in range(2):
                more.append(
                    study._storage.create_new_trial(study._study_id, template_trial=template)
                )
                more.append(create_running_trial(study._storage, study._study_id, params,
                                                 distributions, {})[1])  # fmt: skip
            assert [study._storage.get_trial(more[0]).number, more[1]] == [2, 3]
            assert [study._storage.get_trial(more[2]).number, more[3]] == [4, 5]
            # Read back through a fresh storage, as a worker or a later driver would.
            fresh = optuna.load_study(study_name=name, storage=open_storage(spec))
            theirs, ours = (fresh._storage.get_trial(i) for i in (optuna_id, ours_id))
            assert ours.state == theirs.state == TrialState.RUNNING
            assert ours.params == theirs.params == params
            assert ours.distributions == theirs.distributions
            assert ours.user_attrs == theirs.user_attrs
            assert ours.datetime_start is not None
            if "://" in spec:  # the first heartbeat is written with the trial
                storage = fresh._storage._backend
                from optuna.storages._rdb import models
                from optuna.storages._rdb.storage import _create_scoped_session

                with _create_scoped_session(storage.scoped_session) as session:
                    assert models.TrialHeartbeatModel.where_trial_id(ours_id, session) is not None
        finally:
            if "://" in spec:
                optuna.delete_study(study_name=name, storage=open_storage(spec))


def _count_calls(monkeypatch, cls, method: str) -> list[int]:
    calls = [0]
    original = getattr(cls, method)

    def counted(self, *args, **kwargs):
        calls[0] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, counted)
    return calls


def test_the_driver_reads_the_whole_study_as_often_for_80_trials_as_for_20(tmp_path, monkeypatch):
    space = parse_space(tiny_space())
    reads = _count_calls(monkeypatch, optuna.storages.JournalStorage, "get_all_trials")
    counts = {}
    for n_trials in (20, 80):
        reads[0] = 0
        journal = str(tmp_path / f"{n_trials}.journal")
        study = search("random", space, "scale", journal, n_trials, InlineExecutor(),
                       trial_fn=fake_trial, progress=False)  # fmt: skip
        counts[n_trials] = reads[0]
        states = [t.state for t in study.get_trials()]
        assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == n_trials
    assert counts[80] == counts[20] < 10  # once at the start, not once per trial


def test_sql_statements_per_trial_stay_few_as_the_study_grows(tmp_path):
    reason = _postgres_ready()
    if reason:
        pytest.skip(reason)
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    statements = [0]

    def count(*_args) -> None:
        statements[0] += 1

    space = parse_space(tiny_space())
    name = f"ferlab-test-{uuid.uuid4().hex[:8]}"
    event.listen(Engine, "before_cursor_execute", count)
    per_trial = []
    try:
        for total in (30, 60):
            before = statements[0]
            search("random", space, name, POSTGRES, total, InlineExecutor(),
                   trial_fn=fake_trial, progress=False)  # fmt: skip
            per_trial.append((statements[0] - before) / 30)
    finally:
        event.remove(Engine, "before_cursor_execute", count)
        optuna.delete_study(study_name=name, storage=open_storage(POSTGRES))
    # Optuna's own ask/suggest/tell path takes over 60 statements per trial (2 epochs here).
    assert all(n < 25 for n in per_trial), per_trial
    assert per_trial[1] <= per_trial[0] * 1.2, per_trial


def test_a_timeout_stops_starting_trials_and_lets_the_running_one_finish(tmp_path):
    space = parse_space(tiny_space())

    def slow_trial(config: dict, report) -> float:
        return fake_trial(config, report, sleep=0.2)

    started = time.monotonic()
    study = search("random", space, "timed", str(tmp_path / "s.journal"), 1000, InlineExecutor(),
                   trial_fn=slow_trial, progress=False, timeout=1.0)  # fmt: skip
    seconds = time.monotonic() - started
    states = [t.state for t in study.get_trials()]
    assert 1 <= len(states) < 1000 and TrialState.RUNNING not in states
    assert seconds < 1.0 + 2 * 0.2 + 1.0  # the budget, one running trial, start-up


HANG_S = 25


def hang_first_trial(config: dict, report, marker: str) -> float:
    """Hang (far past the trial timeout) in the first trial that runs; others finish at once."""
    try:
        with open(marker, "x"):
            pass
        time.sleep(HANG_S)
    except FileExistsError:
        pass
    return fake_trial(config, report)


def test_a_hung_trial_is_failed_after_the_trial_timeout_and_retried_once(tmp_path):
    from ferlab.search.cluster import open_executor

    space = parse_space(tiny_space())
    trial_fn = functools.partial(hang_first_trial, marker=str(tmp_path / "hung"))
    with open_executor(2) as executor:
        study = search("random", space, "hang", str(tmp_path / "s.journal"), 6, executor,
                       trial_fn=trial_fn, progress=False, trial_timeout=5.0)  # fmt: skip
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 1 and "no result after 5 s" in failed[0].user_attrs["error"]
    # Failed once 5 s had passed, not when the hang ended. (Its worker's thread stays busy
    # until the trial returns: a thread cannot be stopped, so the retry may wait for it.)
    held = failed[0].datetime_complete - failed[0].datetime_start
    assert held.total_seconds() < HANG_S - 5
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == failed[0].number]
    assert len(retry) == 1 and retry[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retry[0].params == failed[0].params
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 6


def test_the_best_so_far_curve_lists_each_trial_that_raised_the_best():
    import datetime as dt

    from ferlab.search.report import best_so_far

    t0 = dt.datetime(2026, 1, 1, 12, 0)
    study = optuna.create_study(direction="maximize")
    # (minutes started, minutes finished, state, value), added out of completion order
    for start, end, state, value in [
        (0, 10, TrialState.COMPLETE, 0.40), (0, 4, TrialState.COMPLETE, 0.30),
        (4, 6, TrialState.PRUNED, 0.20), (6, 12, TrialState.COMPLETE, 0.35),
        (10, 15, TrialState.FAIL, None), (12, 20, TrialState.COMPLETE, 0.45),
    ]:  # fmt: skip
        trial = optuna.trial.create_trial(state=state, value=value)
        trial.datetime_start = t0 + dt.timedelta(minutes=start)
        trial.datetime_complete = t0 + dt.timedelta(minutes=end)
        study.add_trial(trial)
    assert best_so_far(study) == [
        {"finished": 1, "minutes": 4.0, "trial": 1, "val_accuracy": 0.30},
        {"finished": 3, "minutes": 10.0, "trial": 0, "val_accuracy": 0.40},
        {"finished": 5, "minutes": 20.0, "trial": 5, "val_accuracy": 0.45},
    ]


# Trials are told outside Study.optimize on a heartbeat storage, as ferlab's workers do on purpose
# (the CLI silences the same warning).
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_epoch_reports_read_back_as_optunas_and_a_finished_trial_refuses_them(tmp_path):
    from ferlab.search.storage import report_value

    for spec in _storages(tmp_path):
        name = f"ferlab-test-{uuid.uuid4().hex[:8]}"
        study = optuna.create_study(study_name=name, storage=open_storage(spec))
        try:
            ours, theirs = study.ask(), study.ask()
            values = {1: 0.25, 2: math.nan, 3: math.inf, 4: -math.inf, 5: 0.5}
            for step, value in values.items():
                report_value(study._storage, ours._trial_id, step, value)
                theirs.report(value, step)
            report_value(study._storage, ours._trial_id, 5, 0.75)  # a step reported again
            fresh = optuna.load_study(study_name=name, storage=open_storage(spec))
            read = fresh._storage.get_trial(ours._trial_id).intermediate_values
            expected = {**values, 5: 0.75}
            assert read.keys() == expected.keys()
            assert all(read[k] == v or (math.isnan(read[k]) and math.isnan(v))
                       for k, v in expected.items())  # fmt: skip
            assert fresh._storage.get_trial(theirs._trial_id).intermediate_values.keys() == {
                1,
                2,
                3,
                4,
                5,
            }
            study.tell(ours, 0.5)
            with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
                report_value(study._storage, ours._trial_id, 6, 0.1)
        finally:
            if "://" in spec:
                optuna.delete_study(study_name=name, storage=open_storage(spec))


def _connections(engine, pids: set[int]) -> dict[str, set[tuple]]:
    """Open connections of the processes ``pids`` by role (``driver``, ``worker``), each named by
    its server process and start time, so that one closed and another opened are told apart."""
    from sqlalchemy import text

    query = text(
        "SELECT pid, backend_start, application_name FROM pg_stat_activity "
        "WHERE application_name LIKE 'ferlab search %'"
    )
    with engine.connect() as connection:
        rows = list(connection.execute(query))
    found: dict[str, set[tuple]] = {"driver": set(), "worker": set()}
    for backend, started, name in rows:
        words = name.split()  # "ferlab search ROLE PID"
        if len(words) == 4 and int(words[3]) in pids:
            found[words[2]].add((backend, started))
    return found


def test_database_connections_stay_bounded_by_the_pool_whatever_the_workers(tmp_path):
    reason = _postgres_ready()
    if reason:
        pytest.skip(reason)
    import threading

    import sqlalchemy

    from ferlab.search.cluster import open_executor
    from ferlab.search.storage import POOL_SIZE, database_url

    monitor = sqlalchemy.create_engine(database_url(POSTGRES))
    opened: list[dict[str, int]] = []  # connections opened since `before`, by role, per look
    stop = threading.Event()
    pids = {os.getpid()}

    def watch() -> None:
        while not stop.wait(0.05):
            now = _connections(monitor, pids)
            opened.append({role: len(now[role] - before[role]) for role in now})

    space = parse_space(tiny_space())
    name = f"ferlab-test-{uuid.uuid4().hex[:8]}"
    trial_fn = functools.partial(fake_trial, sleep=0.1)
    watcher = threading.Thread(target=watch)
    gc.collect()  # storages of earlier tests in this process may still hold pooled connections
    before = _connections(monitor, pids)
    try:
        with open_executor(2) as executor:
            pids |= set(executor.client.run(os.getpid).values())  # this search's workers
            watcher.start()
            search("random", space, name, POSTGRES, 8, executor, trial_fn=trial_fn,
                   progress=False)  # fmt: skip
    finally:
        stop.set()
        watcher.join()
        optuna.delete_study(study_name=name, storage=open_storage(POSTGRES))
    # Counted by identity, not number: connections of earlier tests in this process, open before
    # the search, may close during it.
    driver = max(s["driver"] for s in opened)
    workers = max(s["worker"] for s in opened)
    assert 1 <= driver <= POOL_SIZE  # the driver's pool
    assert 1 <= workers <= 2 * 2  # at most a report and a heartbeat at once per worker
    assert sum(s["worker"] <= 0 for s in opened) > len(opened) // 4  # idle: none
