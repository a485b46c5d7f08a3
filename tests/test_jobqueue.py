"""Batch jobs through dask-jobqueue: the job scripts, checked against what the batch systems read.

Nothing is submitted: ``job_script()`` works offline. What each line must say comes from the
batch systems' own documentation:

- SLURM (``sbatch``): ``--cpus-per-task`` CPUs for one task (``-n 1``); ``--mem`` is memory per
  node, a number with an optional K/M/G/T suffix (powers of 1024; megabytes without one);
  ``-t`` the time limit, ``HH:MM:SS`` among others.
- PBS Professional / OpenPBS (``qsub``): ``-l select=1:ncpus=N:mem=SIZE`` (sizes in b, kb, mb,
  gb, tb, powers of 1024, either case) and ``-l walltime=HH:MM:SS``.
- HTCondor (``condor_submit``): ``request_cpus`` (job attribute ``RequestCpus``),
  ``request_memory`` in MiB and ``request_disk`` in KiB when given as numbers; no walltime.

Every job runs ``cores`` worker processes (``--nworkers``) of one thread each (``--nthreads 1``)
with one BLAS thread, started by this very Python (so the same virtual environment).
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import sys
from pathlib import Path

import pytest
from dask.utils import parse_bytes

from ferlab.errors import ConfigError
from ferlab.search import cluster as cluster_module
from ferlab.search.cluster import (
    THREAD_VARS,
    ReplaceEndedJobs,
    jobqueue_cluster,
    lifetime_args,
    open_executor,
    walltime_seconds,
)

GB8 = 8_000_000_000
UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def size_bytes(text: str, default_unit: str) -> int:
    """A batch system's size (``8G``, ``7630MB``, ``7630mb``) in bytes; units are powers of 1024."""
    match = re.fullmatch(r"(\d+)\s*([kmgtKMGT]?)[bB]?", text.strip())
    assert match, f"not a size: {text!r}"
    return int(match.group(1)) * UNITS[(match.group(2) or default_unit).lower()]


def script_of(kind: str, **kwargs) -> str:
    cluster = jobqueue_cluster(kind, cores=4, memory="8GB", **kwargs)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


def worker_command(script: str) -> tuple[list[str], list[str]]:
    """``(commands before the worker, the worker's argv)`` of a job script."""
    lines = [line for line in script.splitlines() if line and not line.startswith("#")]
    if "Executable = /bin/sh" in lines:  # HTCondor: Arguments = "-c 'cmd; cmd; worker'"
        arguments = next(line for line in lines if line.startswith("Arguments = "))
        argv = shlex.split(arguments.removeprefix("Arguments = ").strip('"'))
        assert argv[0] == "-c"
        lines = [part.strip() for part in argv[1].split(";")]
    index = next(i for i, line in enumerate(lines) if "distributed.cli.dask_worker" in line)
    return lines[:index], shlex.split(lines[index])


def option(argv: list[str], name: str) -> str:
    assert argv.count(name) == 1, f"{name} given {argv.count(name)} times in {argv}"
    return argv[argv.index(name) + 1]


def check_worker(script: str, *, cores: int, job_memory: int) -> list[str]:
    """The checks shared by every batch system; returns the worker's argv."""
    before, argv = worker_command(script)
    # The same Python (the driver's virtual environment) runs the worker.
    assert argv[:3] == [sys.executable, "-m", "distributed.cli.dask_worker"]
    assert re.fullmatch(r"tcp://[\d.]+:\d+", argv[3]), argv
    # One BLAS thread, set before the worker starts.
    for var in THREAD_VARS:
        assert f"export {var}=1" in before, (var, before)
    # processes = cores, one thread each, and their memory limits fit in the job's memory.
    assert option(argv, "--nthreads") == "1"
    assert option(argv, "--nworkers") == str(cores)
    assert "--nanny" in argv
    per_worker = parse_bytes(option(argv, "--memory-limit"))
    assert 0.95 * job_memory <= cores * per_worker <= job_memory
    return argv


def check_lifetime(argv: list[str], walltime_s: int) -> None:
    """Workers leave before the batch system kills the job, staggered, but not much earlier."""
    lifetime = int(option(argv, "--lifetime").removesuffix("s"))
    stagger = int(option(argv, "--lifetime-stagger").removesuffix("s"))
    assert lifetime + stagger < walltime_s
    assert lifetime >= 0.9 * walltime_s


def test_slurm_job_script_matches_sbatch():
    script = script_of("slurm", walltime="02:00:00")
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH -n 1" in directives  # one task ...
    assert "#SBATCH --cpus-per-task=4" in directives  # ... with all the job's cores
    (mem,) = [d.split("=", 1)[1] for d in directives if d.startswith("#SBATCH --mem=")]
    assert GB8 <= size_bytes(mem, default_unit="m") <= 1.1 * GB8
    assert "#SBATCH -t 02:00:00" in directives
    check_lifetime(check_worker(script, cores=4, job_memory=GB8), 7200)


def test_pbs_job_script_matches_qsub():
    script = script_of("pbs", walltime="02:00:00")
    directives = [line for line in script.splitlines() if line.startswith("#PBS")]
    (select,) = [d for d in directives if d.startswith("#PBS -l select=")]
    chunk = dict(part.split("=", 1) for part in select.removeprefix("#PBS -l select=1:").split(":"))
    assert select.startswith("#PBS -l select=1:") and chunk["ncpus"] == "4"
    assert GB8 <= size_bytes(chunk["mem"], default_unit="") <= 1.1 * GB8
    assert "#PBS -l walltime=02:00:00" in directives
    check_lifetime(check_worker(script, cores=4, job_memory=GB8), 7200)


def test_htcondor_submit_file_matches_condor_submit():
    script = script_of("htcondor")
    lines = dict(
        line.split(" = ", 1) for line in script.splitlines() if " = " in line and line[0] != "#"
    )
    # RequestCpus/RequestMemory/RequestDisk refer to the MY.DaskWorker* attributes.
    attrs = {key.removeprefix("MY."): value for key, value in lines.items()}
    assert lines["RequestCpus"] == "MY.DaskWorkerCores" and attrs["DaskWorkerCores"] == "4"
    assert lines["RequestMemory"] == "floor(MY.DaskWorkerMemory / 1048576)"  # MiB
    assert int(attrs["DaskWorkerMemory"]) == GB8
    assert lines["RequestDisk"] == "floor(MY.DaskWorkerDisk / 1024)"  # KiB
    assert int(attrs["DaskWorkerDisk"]) == 2_000_000_000
    assert lines["Executable"] == "/bin/sh"
    argv = check_worker(script, cores=4, job_memory=GB8)
    assert "--lifetime" not in argv  # HTCondor jobs have no walltime to leave before


def test_default_walltime_is_dask_jobqueues_and_workers_leave_before_it():
    import dask

    configured = dask.config.get("jobqueue.slurm.walltime")
    script = script_of("slurm")
    assert f"#SBATCH -t {configured}" in script
    check_lifetime(worker_command(script)[1], walltime_seconds(configured))


def test_walltime_must_be_hh_mm_ss_and_htcondor_has_none():
    assert walltime_seconds("1:30:00") == 5400 and walltime_seconds("100:00:00") == 360_000
    assert lifetime_args("01:00:00") == ["--lifetime", "3300s", "--lifetime-stagger", "240s"]
    for bad in ("2h", "90", "00:00:00", "1:60:00", "01:00"):
        with pytest.raises(ConfigError, match="HH:MM:SS"):
            jobqueue_cluster("slurm", cores=1, memory="1GB", walltime=bad)
    with pytest.raises(ConfigError, match="HTCondor"):
        jobqueue_cluster("htcondor", cores=1, memory="1GB", walltime="01:00:00")
    with pytest.raises(ConfigError, match="--jobs"), open_executor(1, cluster="slurm", jobs=0):
        pass


@pytest.mark.timeout(150)
def test_a_search_outlives_its_jobs_ended_jobs_are_replaced(tmp_path, monkeypatch):
    """Jobs of two workers end mid-search (their lifetime); new jobs take over, the count holds.

    dask-jobqueue's ``LocalCluster`` runs each job's script as a local process: the same
    machinery as SLURM or PBS, nothing submitted. Without the replacement of ended jobs of
    several workers the search would wait for ever on a cluster without workers.
    """
    import dask
    from dask_jobqueue.local import LocalCluster
    from optuna.trial import TrialState

    from ferlab.search.space import parse_space
    from ferlab.search.study import search
    from test_search import fake_trial, tiny_space

    made = []

    def local_jobs(kind: str, *, cores: int, memory: str, walltime: str | None) -> LocalCluster:
        assert (kind, walltime) == ("slurm", "00:00:08")
        cls = type("LocalCluster", (ReplaceEndedJobs, LocalCluster), {})
        made.append(cls(cores=cores, processes=cores, memory=memory, python=sys.executable,
                        worker_extra_args=lifetime_args(walltime), silence_logs="error"))  # fmt: skip
        return made[-1]

    monkeypatch.setattr(cluster_module, "jobqueue_cluster", local_jobs)
    # The jobs' workers are plain processes: they import the trial function from tests/.
    tests = str(Path(__file__).resolve().parent)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
    )
    n_trials = 48  # ~12 s of trials on two workers: longer than a job lives
    with (
        dask.config.set({"distributed.deploy.lost-worker-timeout": "1s"}),
        open_executor(0, cluster="slurm", jobs=1, cores=2, memory="2GB",
                      walltime="00:00:08") as executor,
    ):  # fmt: skip
        assert executor.slots == 2
        study = search("random", parse_space(tiny_space()), "jobs", str(tmp_path / "s.journal"),
                       n_trials, executor, pruner="none", progress=False,
                       trial_fn=functools.partial(fake_trial, sleep=0.25))  # fmt: skip
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == n_trials
    workers = {t.user_attrs["worker"] for t in finished}
    # More than one job's two worker processes ran trials: ended jobs were replaced.
    assert len(workers) >= 4, workers
    # Trials cut off by a job's end failed and were retried; none is left running.
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    assert len(made) == 1


def test_cli_refuses_a_bad_walltime_before_submitting_anything(tmp_path, capsys):
    from ferlab.cli import main
    from test_search import DIGITS_SPACE

    common = ["search", "random", str(DIGITS_SPACE), "--trials", "1", "--study-dir",
              str(tmp_path), "--quiet", "--jobs", "2", "--cores", "2"]  # fmt: skip
    assert main([*common, "--cluster", "slurm", "--walltime", "2h"]) == 2
    assert "--walltime must be HH:MM:SS" in capsys.readouterr().err
    assert main([*common, "--cluster", "htcondor", "--walltime", "01:00:00"]) == 2
    assert "HTCondor jobs have none" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # no study was started
