"""One trial on a worker: data loaded once per process, per-epoch reports, pruning, heartbeats."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import optuna

from ferlab.errors import TrainingDiverged
from ferlab.search.pruning import MedianRule
from ferlab.search.storage import is_rdb, open_storage, report_value
from ferlab.settings import TrainSettings, parse_config

Report = Callable[[int, float], None]
TrialFn = Callable[[dict, Report], float]
PRUNERS = ("median", "hyperband", "none")
STARTED_TOPIC = "ferlab-trial-started"  # a Dask event each trial sends as it starts

# Per worker process: the decoded, preprocessed data of the last data set used, and open studies.
_DATA_CACHE: dict[str, tuple] = {}
_STUDY_CACHE: dict[tuple, tuple] = {}
# A worker process may run trials in several threads: they open studies and load data one at
# a time (fifty threads creating fifty storages at once would race on the schema check).
_CACHE_LOCK = threading.Lock()
# Two: a search may try two preprocessings of one data set.
DATA_CACHE_SIZE = 2


@dataclass(frozen=True)
class TrialTask:
    """What a worker needs to run one asked trial."""

    storage: str
    study_name: str
    trial_id: int
    number: int
    config: dict
    pruner: str
    # With the median pruner: the completed trials' medians when this trial was asked.
    rule: MedianRule = field(default_factory=MedianRule)


@dataclass(frozen=True)
class TrialOutcome:
    """How a trial ended on its worker: ``complete``, ``pruned`` or ``fail``.

    ``curve`` holds the reported ``{epoch: validation accuracy}``.
    """

    state: str
    value: float | None = None
    message: str = ""
    seconds: float = 0.0
    curve: dict[int, float] = field(default_factory=dict)


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    """The named pruner, sized to the trials' epoch cap, as Optuna sees the study.

    Trials do not ask it for ``median``: they apply :class:`MedianRule` (the same rule) to the
    medians the driver hands them, which costs nothing per epoch however large the study.
    """
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max_epochs, reduction_factor=3
        )
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}")


def _data_key(settings: TrainSettings) -> str:
    return json.dumps(
        {"data": settings.data.model_dump(), "seed": settings.seed, "dtype": settings.model.dtype},
        sort_keys=True,
    )


def cached_features(settings: TrainSettings) -> tuple:
    """``(splits, features)`` for the config's data, loaded once per process and reused."""
    key = _data_key(settings)
    with _CACHE_LOCK:
        return _DATA_CACHE.get(key) or _load_features(settings, key)


def _load_features(settings: TrainSettings, key: str) -> tuple:
    from ferlab.data.split import load_splits
    from ferlab.runs.fc import make_features

    if key not in _DATA_CACHE:
        if len(_DATA_CACHE) >= DATA_CACHE_SIZE:  # FER2013 features are ~250 MB each
            _DATA_CACHE.pop(next(iter(_DATA_CACHE)))
        splits = load_splits(settings)
        features = make_features(
            splits, settings.data.preprocessing, np.dtype(settings.model.dtype)
        )
        _DATA_CACHE[key] = (splits, features)
    return _DATA_CACHE[key]


def train_trial(config: dict, report: Report) -> float:
    """Train the net of a trial's config (the config table the study stores, checked here),
    reporting validation accuracy each epoch; return the final one."""
    from ferlab.runs.fc import accuracy, build_model, build_solver

    settings = parse_config(config, TrainSettings)
    splits, features = cached_features(settings)
    model = build_model(settings, features, splits)
    solver = build_solver(
        settings,
        model,
        features,
        splits,
        verbose=False,
        epoch_callback=lambda epoch, history: report(epoch, history["val_acc"][-1]),
    )
    solver.train()
    # The Solver restored the best-validation-loss weights: score the model a retrain would keep.
    return accuracy(model, features.X_val, features.y_val)


def _in_dask_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def _open_study(task: TrialTask):
    with _CACHE_LOCK:
        return _open_study_locked(task)


def _open_study_locked(task: TrialTask):
    key = (task.storage, task.study_name, task.pruner, task.config["solver"]["epochs"])
    if key not in _STUDY_CACHE:
        # A Dask worker holds no database connection between writes, so that 200 workers do not
        # hold 200 connections; a trial run in the driver's process shares its pool.
        storage = open_storage(task.storage, pooled=not _in_dask_worker(), worker=True)
        pruner = make_pruner(task.pruner, task.config["solver"]["epochs"])
        study = optuna.load_study(study_name=task.study_name, storage=storage, pruner=pruner)
        _STUDY_CACHE[key] = (storage, study)
    return _STUDY_CACHE[key]


def _beat(storage, trial_id: int, stop: threading.Event) -> None:
    interval = storage.get_heartbeat_interval() or 10
    while not stop.wait(interval):
        storage.record_heartbeat(trial_id)


def execute_trial(task: TrialTask, trial_fn: TrialFn | None = None) -> TrialOutcome:
    """Run one trial on this process; the driver records the outcome in the study."""
    started = time.perf_counter()
    storage, study = _open_study(task)
    on_worker = _in_dask_worker()
    if on_worker:
        # A Dask task may start late or twice (a lost worker's task is re-run): check first.
        frozen = storage.get_trial(task.trial_id)
        if frozen.state != optuna.trial.TrialState.RUNNING:
            return TrialOutcome("fail", message=f"trial was {frozen.state.name} before it started")
        if frozen.intermediate_values:
            return TrialOutcome("fail", message="the trial's worker was lost mid-trial")
        from distributed import get_worker

        get_worker().log_event(STARTED_TOPIC, task.trial_id)  # its time limit runs from now
        # Who ran it. (In the driver's process, the trial was created a moment ago.)
        host = f"{socket.gethostname()}:{os.getpid()}"
        storage.set_trial_user_attr(task.trial_id, "worker", host)
    curve: dict[int, float] = {}
    # Hyperband asks Optuna's pruner, which needs a Trial; the median rule needs only the writes.
    trial = optuna.trial.Trial(study, task.trial_id) if task.pruner == "hyperband" else None

    def report(epoch: int, value: float) -> None:
        curve[epoch] = float(value)
        if trial is not None:
            trial.report(curve[epoch], epoch)
            prune = trial.should_prune()
        else:
            report_value(storage, task.trial_id, epoch, curve[epoch])
            prune = task.pruner == "median" and task.rule.should_prune(epoch, curve)
        if prune:
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")

    stop = threading.Event()
    if is_rdb(task.storage):
        if on_worker:
            storage.record_heartbeat(task.trial_id)
        threading.Thread(target=_beat, args=(storage, task.trial_id, stop), daemon=True).start()
    try:
        value = float((trial_fn or train_trial)(task.config, report))
        state, message = "complete", ""
    except optuna.TrialPruned as exc:
        value, state, message = None, "pruned", str(exc)
    except TrainingDiverged as exc:
        # Divergence is a finished, hopeless trial (too high a learning rate), not a crash.
        value, state, message = None, "pruned", f"diverged: {exc}"
    except Exception as exc:  # any error in one trial must not stop the search
        value, state, message = None, "fail", f"{type(exc).__name__}: {exc}"
    finally:
        stop.set()
    seconds = time.perf_counter() - started
    return TrialOutcome(state, value, message, seconds, curve)
