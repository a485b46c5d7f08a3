"""Random, TPE and sequential searches over a SPACE, and resuming them, on one Optuna study each."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna

from ferlab.errors import ConfigError
from ferlab.search.runner import FINISHED, count, run_trials
from ferlab.search.space import SearchSpace, parse_space
from ferlab.search.storage import describe, driver_lock, is_rdb, open_storage
from ferlab.search.trial import PRUNERS, TrialFn
from ferlab.settings.loading import DEFAULTS

META_KEY = "ferlab"
MODES = ("random", "tpe", "sequential")


@dataclass
class StepResult:
    """The winner of one step of a sequential search."""

    step: str
    study: str
    values: dict
    val_accuracy: float | None
    finished: int


def _check_meta(name: str, stored: dict, meta: dict) -> None:
    for key in ("mode", "space", "order"):
        if key in meta and stored.get(key) != meta[key]:
            what = {"mode": "search kind", "space": "SPACE", "order": "step order"}[key]
            raise ConfigError(
                f"study {name!r} already exists with another {what}; continue it with "
                f"`ferlab search resume --study {name}` or pick a new --study name"
            )


def open_study(name: str, storage: str, meta: dict | None = None) -> optuna.Study:
    """Create the study, or load it to continue (its stored settings must match ``meta``)."""
    if meta is None and not is_rdb(storage) and not Path(storage).is_file():
        raise ConfigError(f"no study {name!r}: {storage} does not exist (check --study-dir)")
    storage_obj = open_storage(storage)
    if meta is None:
        try:
            return optuna.load_study(study_name=name, storage=storage_obj)
        except KeyError:
            raise ConfigError(f"no study {name!r} in {describe(storage)}") from None
    study = optuna.create_study(
        study_name=name, storage=storage_obj, direction="maximize", load_if_exists=True
    )
    stored = study.user_attrs.get(META_KEY)
    if stored is not None:
        _check_meta(name, stored, meta)
        meta = {**stored, **meta}
    study.set_user_attr(META_KEY, meta)
    return study


def study_meta(study: optuna.Study) -> dict:
    """The ferlab settings a study was started with."""
    meta = study.user_attrs.get(META_KEY)
    if meta is None:
        raise ConfigError(f"study {study.study_name!r} was not made by `ferlab search`")
    return meta


def _check_options(n_trials: int, pruner: str) -> None:
    if n_trials < 1:
        raise ConfigError(f"the number of trials must be >= 1, got {n_trials}")
    if pruner not in PRUNERS:
        raise ConfigError(f"unknown pruner {pruner!r}; choose one of {', '.join(PRUNERS)}")


def search(
    mode: str,
    space: SearchSpace,
    name: str,
    storage: str,
    n_trials: int,
    executor,
    *,
    pruner: str = "median",
    seed: int | None = None,
    trial_fn: TrialFn | None = None,
    progress: bool = True,
    timeout: float | None = None,
    trial_timeout: float | None = None,
) -> optuna.Study:
    """A random or TPE search: ``n_trials`` finished trials in total in study ``name``.

    ``timeout`` (seconds) stops starting trials after that time; the running ones finish.
    ``trial_timeout`` (seconds) fails a trial with no result that long after it started on its
    worker (hung), and queues it again once.
    """
    if mode not in ("random", "tpe"):
        raise ConfigError(f"unknown search kind {mode!r}")
    _check_options(n_trials, pruner)
    for option, value in (("--timeout", timeout), ("--trial-timeout", trial_timeout)):
        if value is not None and not value > 0:
            raise ConfigError(f"{option} must be > 0 seconds, got {value}")
    seed = space.seed if seed is None else seed
    meta = {"mode": mode, "space": space.raw, "n_trials": n_trials, "pruner": pruner, "seed": seed}
    with driver_lock(storage):
        study = open_study(name, storage, meta)
        return run_trials(
            study, storage, space, n_trials, executor,
            sampler=mode, pruner=pruner, seed=seed, trial_fn=trial_fn, progress=progress,
            timeout=timeout, trial_timeout=trial_timeout,
        )  # fmt: skip


def switched_off(key: str):
    """The value that switches a regulariser off (0 of the config key's type)."""
    section, name = key.split(".", 1)
    return type(DEFAULTS[section][name] or 0.0)(0)


def step_winner(study: optuna.Study, sub: SearchSpace) -> tuple[dict, float | None]:
    """The best completed trial's values of a step, or nothing when no trial completed."""
    if count(study, (optuna.trial.TrialState.COMPLETE,)) == 0:
        return {}, None
    best = study.best_trial
    return sub.values_from_params(best.params), best.value


def sequential(
    space: SearchSpace,
    name: str,
    storage: str,
    order: list[str],
    trials_per_step: int,
    executor,
    *,
    pruner: str = "median",
    seed: int | None = None,
    trial_fn: TrialFn | None = None,
    progress: bool = True,
) -> list[StepResult]:
    """One group at a time, the rest held at the best so far; each step's winner carried on."""
    _check_options(trials_per_step, pruner)
    if not order:
        raise ConfigError("--order needs at least one step")
    for step in order:
        if step not in space.groups:
            known = ", ".join(space.groups) or "none"
            raise ConfigError(
                f"unknown step {step!r}; the SPACE's [sequential] groups are: {known}"
            )
    seed = space.seed if seed is None else seed
    meta = {
        "mode": "sequential", "space": space.raw, "order": list(order),
        "n_trials": trials_per_step, "pruner": pruner, "seed": seed,
    }  # fmt: skip
    common = {"pruner": pruner, "seed": seed, "trial_fn": trial_fn, "progress": progress}
    with driver_lock(storage):
        return _run_steps(space, name, storage, order, trials_per_step, executor, meta, common)


def _run_steps(space, name, storage, order, trials_per_step, executor, meta, common):
    """The steps of :func:`sequential`, run under its driver lock."""
    pruner, seed, trial_fn, progress = (
        common[k] for k in ("pruner", "seed", "trial_fn", "progress")
    )
    parent = open_study(name, storage, meta)
    carried: dict = {}
    results = []
    for index, step in enumerate(order):
        group = space.groups[step]
        fixed = {**carried, **{key: switched_off(key) for key in group.off}}
        sub = space.subspace(group.params, fixed)
        step_name = f"{name}.{index + 1}-{step}"
        study = open_study(
            step_name, storage, {"mode": "sequential-step", "parent": name, "step": step}
        )
        run_trials(
            study, storage, sub, trials_per_step, executor,
            sampler="random", pruner=pruner, seed=seed + index, trial_fn=trial_fn,
            progress=progress,
        )  # fmt: skip
        values, value = step_winner(study, sub)
        carried.update(values)
        results.append(
            StepResult(step, step_name, copy.deepcopy(values), value, count(study, FINISHED))
        )
    parent.set_user_attr("steps", [asdict(r) for r in results])
    parent.set_user_attr("config", space.trial_config(carried))
    return results


def resume(
    name: str, storage: str, executor, *, trial_fn: TrialFn | None = None, progress: bool = True
) -> optuna.Study | list[StepResult]:
    """Finish an interrupted study with its stored settings: run exactly the missing trials."""
    with driver_lock(storage):
        return _resume_locked(name, storage, executor, trial_fn=trial_fn, progress=progress)


def _resume_locked(name, storage, executor, *, trial_fn, progress):
    """The body of :func:`resume`, run under its driver lock."""
    meta = study_meta(open_study(name, storage))
    if meta["mode"] == "sequential-step":
        raise ConfigError(f"{name!r} is one step of study {meta['parent']!r}; resume that one")
    space = parse_space(meta["space"], f"study {name}")
    common = {
        "pruner": meta["pruner"],
        "seed": meta["seed"],
        "trial_fn": trial_fn,
        "progress": progress,
    }
    if meta["mode"] == "sequential":
        return sequential(space, name, storage, meta["order"], meta["n_trials"], executor, **common)
    return search(meta["mode"], space, name, storage, meta["n_trials"], executor, **common)
