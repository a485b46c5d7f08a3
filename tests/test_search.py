"""Searches end to end on tiny stand-in trials and the digits data: counts, crashes, resume."""

from __future__ import annotations

import functools
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import cloudpickle
import optuna
import pytest
from optuna.trial import TrialState

from ferlab.cli import main
from ferlab.search.cluster import jobqueue_cluster, open_executor
from ferlab.search.space import load_space, parse_space
from ferlab.search.study import open_study, resume, search, sequential

# Worker processes unpickle this module's trial functions by value (tests/ is not importable there).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

REPO = Path(__file__).resolve().parent.parent
DIGITS_SPACE = REPO / "src" / "ferlab" / "configs" / "spaces" / "digits_demo.toml"
FERLAB = str(Path(sys.executable).parent / "ferlab")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def tiny_space() -> dict:
    return {
        "search": {"seed": 3},
        "config": {"data": {"dataset": "digits"}, "model": {"dropout": 0.2, "reg": 0.1},
                   "solver": {"epochs": 2, "lr": 0.5}},
        "params": {
            "solver.lr": {"type": "log-float", "low": 1e-3, "high": 1.0},
            "model.dropout": {"type": "float", "low": 0.0, "high": 0.5},
            "model.reg": {"type": "log-float", "low": 1e-5, "high": 1.0},
            "model.hidden_dims": {"type": "layers", "low": 1, "high": 3,
                                  "units_low": 4, "units_high": 64},
        },
        "sequential": {
            "lr": {"params": ["solver.lr"]},
            "dropout": {"params": ["model.dropout"], "off": ["model.reg"]},
            "reg": {"params": ["model.reg"], "off": ["model.dropout"]},
            "topology": {"params": ["model.hidden_dims"]},
        },
    }  # fmt: skip


def score(config: dict) -> float:
    """A made-up validation accuracy, best at lr 0.03, no dropout, reg 1e-3, wide nets."""
    lr, model = config["solver"]["lr"], config["model"]
    return (
        1.0
        - 0.1 * abs(math.log10(lr) + 1.5)
        - 0.2 * model["dropout"]
        - 0.02 * abs(math.log10(max(model["reg"], 1e-9)) + 3)
        + 0.001 * sum(model["hidden_dims"])
    )


def fake_trial(config: dict, report, seen: list | None = None, sleep: float = 0.0) -> float:
    if seen is not None:
        seen.append(config)
    value = score(config)
    for epoch in range(1, config["solver"]["epochs"] + 1):
        time.sleep(sleep)
        report(epoch, value)
    return value


def crash_once(config: dict, report, marker: str) -> float:
    """Kill this worker process mid-trial the first time any trial runs."""
    report(1, score(config))
    if not os.path.exists(marker):
        Path(marker).write_text("crashed")
        os._exit(1)
    return fake_trial(config, report)


def test_sequential_order_and_carry_over(tmp_path):
    seen: list[dict] = []
    space = parse_space(tiny_space())
    with open_executor(0) as executor:
        results = sequential(
            space, "seq", str(tmp_path / "s.journal"), ["lr", "dropout", "reg", "topology"], 4,
            executor, pruner="none", trial_fn=functools.partial(fake_trial, seen=seen),
            progress=False,
        )  # fmt: skip
    assert [r.step for r in results] == ["lr", "dropout", "reg", "topology"]
    assert [r.study for r in results][0] == "seq.1-lr" and all(r.finished == 4 for r in results)
    steps = [seen[i : i + 4] for i in range(0, 16, 4)]
    lr_best, dropout_best, reg_best = (r.values[k] for r, k in zip(
        results, ["solver.lr", "model.dropout", "model.reg"], strict=False))  # fmt: skip
    # Step 1 varies only lr; the rest stays at the SPACE's fixed values.
    assert len({c["solver"]["lr"] for c in steps[0]}) == 4
    assert all(c["model"]["dropout"] == 0.2 and c["model"]["reg"] == 0.1 for c in steps[0])
    # Each step's winner is the best of its trials, and is carried into every later step.
    assert results[0].val_accuracy == max(score(c) for c in steps[0])
    assert all(c["solver"]["lr"] == lr_best for c in seen[4:])
    # Dropout is searched with L2 off, L2 with dropout off.
    assert all(c["model"]["reg"] == 0.0 for c in steps[1])
    assert all(c["model"]["dropout"] == 0.0 for c in steps[2])
    # Topology uses the winners of all three earlier steps.
    assert all(c["model"]["dropout"] == dropout_best and c["model"]["reg"] == reg_best
               for c in steps[3])  # fmt: skip
    assert len({tuple(c["model"]["hidden_dims"]) for c in steps[3]}) > 1
    assert results[-1].values["model.hidden_dims"] in [c["model"]["hidden_dims"] for c in steps[3]]


def test_unknown_step_is_rejected(tmp_path):
    from ferlab.errors import ConfigError

    with open_executor(0) as executor, pytest.raises(ConfigError, match="unknown step 'momentum'"):
        sequential(parse_space(tiny_space()), "s", str(tmp_path / "j"), ["lr", "momentum"], 2,
                   executor, progress=False)  # fmt: skip


def test_same_seed_same_trials(tmp_path):
    space = parse_space(tiny_space())
    params = []
    for name in ("a", "b"):
        with open_executor(0) as executor:
            study = search("random", space, name, str(tmp_path / f"{name}.journal"), 5, executor,
                           trial_fn=fake_trial, progress=False)  # fmt: skip
        params.append([t.params for t in study.trials])
    assert params[0] == params[1]
    assert len({t["solver.lr"] for t in params[0]}) == 5


def test_tpe_search_finds_a_good_region(tmp_path):
    space = parse_space(tiny_space())
    with open_executor(0) as executor:
        study = search("tpe", space, "tpe", str(tmp_path / "t.journal"), 18, executor,
                       pruner="none", trial_fn=fake_trial, progress=False)  # fmt: skip
    assert isinstance(study.sampler, optuna.samplers.TPESampler)
    values = [t.value for t in study.trials]
    assert len(values) == 18
    # After its 10 random start-up trials TPE samples better than they did on average.
    assert sum(values[12:]) / 6 > sum(values[:10]) / 10


def test_global_trial_count_with_two_workers_and_rerun_continues(tmp_path):
    space = parse_space(tiny_space())
    storage = str(tmp_path / "study.journal")
    with open_executor(2) as executor:
        study = search("random", space, "count", storage, 7, executor, trial_fn=fake_trial,
                       progress=False)  # fmt: skip
        assert len(study.get_trials(states=FINISHED)) == 7
        assert len(study.trials) == 7
        # The same study name continues up to the new total instead of starting over.
        study = search("random", space, "count", storage, 10, executor, trial_fn=fake_trial,
                       progress=False)  # fmt: skip
    assert len(study.get_trials(states=FINISHED)) == 10 and len(study.trials) == 10
    assert [t.number for t in study.trials] == list(range(10))


def test_killed_worker_trial_fails_and_study_completes(tmp_path):
    space = parse_space(tiny_space())
    marker = tmp_path / "crashed"
    with open_executor(2) as executor:
        study = search("random", space, "crash", str(tmp_path / "study.journal"), 6, executor,
                       pruner="none", trial_fn=functools.partial(crash_once, marker=str(marker)),
                       progress=False)  # fmt: skip
    assert marker.exists()
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 1 and "worker lost" in failed[0].user_attrs["error"]
    assert len(study.get_trials(states=FINISHED)) == 6
    # The lost trial's configuration was retried, not dropped.
    retried = [t for t in study.get_trials(states=FINISHED) if t.params == failed[0].params]
    assert len(retried) == 1 and retried[0].number > failed[0].number


def _finished(storage: str, name: str) -> int:
    try:
        study = optuna.load_study(study_name=name, storage=open_study_storage(storage))
    except KeyError:
        return 0
    return len(study.get_trials(states=FINISHED))


def open_study_storage(storage: str):
    from ferlab.search.storage import open_storage

    return open_storage(storage)


def test_killed_driver_then_resume_runs_exactly_the_missing_trials(tmp_path):
    storage = str(tmp_path / "runs" / "demo" / "study.journal")
    command = [FERLAB, "search", "random", str(DIGITS_SPACE), "--trials", "12", "--workers", "0",
               "--study", "demo", "--study-dir", str(tmp_path / "runs"), "--quiet"]  # fmt: skip
    driver = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 90
    while _finished(storage, "demo") < 3 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert driver.poll() is None, driver.stderr.read().decode()
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    study = optuna.load_study(study_name="demo", storage=open_study_storage(storage))
    before = {t.number: (t.state, t.value, t.params) for t in study.trials}
    fully_sampled = {t.number for t in study.trials if "config" in t.user_attrs}
    done_before = sum(state in FINISHED for state, _, _ in before.values())
    assert 3 <= done_before < 12

    code = main(["search", "resume", "--study", "demo", "--study-dir", str(tmp_path / "runs"),
                 "--workers", "0", "--quiet"])  # fmt: skip
    assert code == 0
    study = optuna.load_study(study_name="demo", storage=open_study_storage(storage))
    assert len(study.get_trials(states=FINISHED)) == 12
    for number, (state, value, params) in before.items():
        trial = study.trials[number]
        if state in FINISHED:  # finished trials are kept as they were
            assert (trial.state, trial.value, trial.params) == (state, value, params)
        else:  # the one running at the kill is failed, and its configuration retried
            assert trial.state == TrialState.FAIL
            if number in fully_sampled:  # (a kill while sampling leaves nothing to retry)
                assert any(t.params == params for t in study.trials[len(before) :])
    new = study.trials[len(before) :]
    assert sum(t.state in FINISHED for t in new) == 12 - done_before
    assert all(t.state in FINISHED for t in new)

    # The report and the retrain of the best trial work on the resumed study.
    out = tmp_path / "report"
    assert main(["search", "report", "--study", "demo", "--study-dir", str(tmp_path / "runs"),
                 "--out", str(out), "--export", "csv"]) == 0  # fmt: skip
    assert (out / "history.png").stat().st_size > 1000 and (out / "report.md").is_file()
    assert len((out / "trials.csv").read_text().splitlines()) == len(study.trials) + 1
    run = tmp_path / "retrained"
    assert main(["search", "retrain", "--study", "demo", "--study-dir", str(tmp_path / "runs"),
                 "--out", str(run), "--quiet"]) == 0  # fmt: skip
    assert (run / "model.npz").is_file() and (run / "test" / "report.json").is_file()


def _postgres_ready() -> str | None:
    try:
        import sqlalchemy

        from ferlab.search.storage import database_url

        url = database_url(POSTGRES)
        with sqlalchemy.create_engine(url, connect_args={"connect_timeout": 3}).connect():
            return None
    except Exception as exc:
        return f"no PostgreSQL server answers at {POSTGRES}: {type(exc).__name__}"


def test_postgres_storage_two_workers(tmp_path):
    reason = _postgres_ready()
    if reason:
        pytest.skip(reason)
    name = f"ferlab-test-{uuid.uuid4().hex[:8]}"
    space = parse_space(tiny_space())
    try:
        with open_executor(2) as executor:
            study = search("random", space, name, POSTGRES, 6, executor, trial_fn=fake_trial,
                           progress=False)  # fmt: skip
        assert len(study.get_trials(states=FINISHED)) == 6 and len(study.trials) == 6
        # Resume on a finished study runs nothing more.
        with open_executor(0) as executor:
            study = resume(name, POSTGRES, executor, trial_fn=fake_trial, progress=False)
        assert len(study.trials) == 6
        heartbeat = open_study_storage(POSTGRES).get_heartbeat_interval()
        assert heartbeat and heartbeat > 0
    finally:
        optuna.delete_study(study_name=name, storage=open_study_storage(POSTGRES))


def test_workers_opening_a_fresh_database_at_once_all_get_the_storage():
    """Each opener tries to create Optuna's tables; those that lose the race try again."""
    reason = _postgres_ready()
    if reason:
        pytest.skip(reason)
    import threading

    import sqlalchemy

    from ferlab.search.storage import database_url, open_storage

    fresh = f"ferlab_fresh_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(database_url(POSTGRES), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {fresh}"))
    url = POSTGRES.rsplit("/", 1)[0] + "/" + fresh
    start, errors, studies = threading.Barrier(4), [], []

    def open_and_count():
        start.wait()
        try:
            storage = open_storage(url, pooled=False)
            studies.append(len(storage.get_all_studies()))
        except Exception as exc:
            errors.append(str(exc))

    try:
        openers = [threading.Thread(target=open_and_count) for _ in range(4)]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join()
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f"DROP DATABASE {fresh} WITH (FORCE)"))
        admin.dispose()
    assert errors == [] and studies == [0, 0, 0, 0]


def test_rerun_with_another_space_is_refused(tmp_path):
    from ferlab.errors import ConfigError

    storage = str(tmp_path / "study.journal")
    with open_executor(0) as executor:
        search("random", parse_space(tiny_space()), "s", storage, 1, executor,
               trial_fn=fake_trial, progress=False)  # fmt: skip
        other = tiny_space()
        other["params"]["solver.lr"]["high"] = 0.5
        with pytest.raises(ConfigError, match="another SPACE"):
            search("random", parse_space(other), "s", storage, 2, executor,
                   trial_fn=fake_trial, progress=False)  # fmt: skip
    assert open_study("s", storage).trials[0].state == TrialState.COMPLETE


@pytest.mark.parametrize(
    ("kind", "needles"),
    [
        (
            "htcondor",
            [
                "MY.DaskWorkerCores = 4",
                "MY.DaskWorkerMemory = 8000000000",
                "--nworkers 4",
                "--nthreads 1",
            ],
        ),
        (
            "slurm",
            ["#SBATCH --cpus-per-task=4", "#SBATCH --mem=8G", "--nworkers 4", "--nthreads 1"],
        ),
        ("pbs", ["ncpus=4", "mem=7630MB", "--nworkers 4", "--nthreads 1"]),
    ],
)
def test_jobqueue_job_script(kind, needles):
    cluster = jobqueue_cluster(kind, cores=4, memory="8GB")
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for needle in [
        *needles,
        sys.executable,
        "distributed.cli.dask_worker",
        "export OMP_NUM_THREADS=1",
    ]:
        assert needle in script, f"{needle!r} not in:\n{script}"


def test_digits_space_real_training_two_workers(tmp_path):
    space = load_space(DIGITS_SPACE)
    with open_executor(2) as executor:
        study = search("random", space, "digits", str(tmp_path / "study.journal"), 4, executor,
                       progress=False)  # fmt: skip
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(study.get_trials(states=FINISHED)) == 4 and complete
    assert all(0.5 < t.value <= 1.0 for t in complete)
    assert all(len(t.intermediate_values) >= 1 for t in complete)
