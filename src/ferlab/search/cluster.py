"""Where trials run: in this process, a local Dask cluster, an existing one, or batch jobs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ferlab.errors import ConfigError
from ferlab.search.trial import STARTED_TOPIC, TrialOutcome

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
JOBQUEUE_KINDS = ("htcondor", "slurm", "pbs")
SLOTS_CHECK_S = 1.0
PROBE = "listening?"  # the driver's own event, to learn that its subscription is live  # how often an executor on an existing cluster counts its worker threads


class InlineExecutor:
    """Runs each trial in the driver process, one at a time (``--workers 0``; debugging, tests)."""

    slots = 1

    def submit(self, fn, *args) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_result(fn(*args))
        return future

    def wait_first(self, futures, timeout: float | None = None) -> list:
        return list(futures)

    def outcome(self, future) -> TrialOutcome:
        return future.result()

    def cancel(self, futures) -> None:
        """Nothing runs in the background."""

    def started_at(self, trial_id: int) -> float | None:
        """Never: a trial here runs to its end inside ``submit``."""
        return None


class DaskExecutor:
    """Submits trials to a Dask client and reports a lost worker as a failed trial.

    ``slots`` is how many trials run at once; ``None`` follows the cluster: the worker threads
    connected now (re-counted at most every :data:`SLOTS_CHECK_S` seconds), so that workers
    started during a search get trials and lost ones are not waited for.
    """

    def __init__(self, client, slots: int | None) -> None:
        self.client = client
        self._fixed = None if slots is None else max(1, slots)
        self._counted, self._counted_at = 1, float("-inf")
        # Workers import the trial code now, not in their first trial.
        client.run(_import_trial_code)
        # When each trial really started on a worker (a trial may wait behind others first):
        # a trial's time limit (--trial-timeout) runs from then.
        self._started: dict[int, float] = {}
        self._listening = threading.Event()
        client.subscribe_topic(STARTED_TOPIC, self._on_started)
        # Events sent before the scheduler has the subscription are lost: wait until it has.
        for _ in range(100):
            client.log_event(STARTED_TOPIC, PROBE)
            if self._listening.wait(0.2):
                break

    def _on_started(self, event) -> None:
        _, trial_id = event
        if trial_id == PROBE:
            self._listening.set()
        else:
            self._started[trial_id] = time.monotonic()

    def started_at(self, trial_id: int) -> float | None:
        """When trial ``trial_id`` started on a worker (``time.monotonic``), if it has."""
        return self._started.get(trial_id)

    @property
    def slots(self) -> int:
        """How many trials to keep running now."""
        if self._fixed is not None:
            return self._fixed
        now = time.monotonic()
        if now - self._counted_at >= SLOTS_CHECK_S:
            self._counted = max(1, sum(self.client.nthreads().values()))
            self._counted_at = now
        return self._counted

    def submit(self, fn, *args):
        return self.client.submit(fn, *args, pure=False)

    def wait_first(self, futures, timeout: float | None = None) -> list:
        """The futures done as soon as one is; none when ``timeout`` seconds pass first."""
        from distributed import wait

        try:
            return list(wait(list(futures), timeout=timeout, return_when="FIRST_COMPLETED").done)
        except TimeoutError:
            return []

    def outcome(self, future) -> TrialOutcome:
        try:
            return future.result()
        except (
            Exception
        ) as exc:  # KilledWorker, CommClosedError...: the worker died under the trial
            return TrialOutcome("fail", message=f"worker lost: {type(exc).__name__}: {exc}")

    def cancel(self, futures) -> None:
        self.client.cancel(list(futures))


def _import_trial_code() -> None:
    import ferlab.search.trial  # noqa: F401


class ReplaceEndedJobs:
    """A dask-jobqueue cluster mixin: a job whose workers have all left is replaced.

    With adaptive scaling, dask-jobqueue forgets an ended job (walltime, preemption) so that a
    new one is submitted, but only for one-process jobs: it looks a worker named ``JOB-0`` up
    under that name, while the job is ``JOB`` (dask-jobqueue issue #611). Here a job of several
    worker processes is forgotten too, once none of them is left after
    ``distributed.deploy.lost-worker-timeout``.
    """

    def _update_worker_status(self, op, msg) -> None:
        if op == "remove":
            name = self.scheduler_info["workers"].get(msg, {}).get("name")
            job = next(
                (
                    job
                    for job, spec in self.worker_spec.items()
                    if name in {f"{job}{suffix}" for suffix in spec.get("group", ())}
                ),
                None,
            )
            if job is not None:
                import dask
                from dask.utils import parse_timedelta

                delay = parse_timedelta(dask.config.get("distributed.deploy.lost-worker-timeout"))
                asyncio.get_running_loop().call_later(delay, self._forget_ended_job, job)
        super()._update_worker_status(op, msg)

    def _forget_ended_job(self, job: str) -> None:
        names = {f"{job}{suffix}" for suffix in self.worker_spec.get(job, {}).get("group", ())}
        if job in self.workers and not any(
            worker["name"] in names for worker in self.scheduler_info["workers"].values()
        ):
            self._futures.add(asyncio.ensure_future(self.workers[job].close()))
            del self.workers[job]  # adaptive scaling now submits a job in its place


def walltime_seconds(walltime: str) -> int:
    """Seconds of an ``HH:MM:SS`` walltime (the one form sbatch and qsub read alike)."""
    match = re.fullmatch(r"(\d+):([0-5]\d):([0-5]\d)", walltime.strip())
    hours, minutes, seconds = map(int, match.groups()) if match else (0, 0, 0)
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ConfigError(f"--walltime must be HH:MM:SS and more than 0, got {walltime!r}")
    return total


def lifetime_args(walltime: str) -> list[str]:
    """Worker options that leave a job before its walltime kills it (as dask-jobqueue advises).

    Workers stop at walltime minus a margin (5 minutes, less for short jobs), staggered so that
    a job's workers do not all leave at once; the cluster then submits a fresh job.
    """
    total = walltime_seconds(walltime)
    margin = min(300, total // 12)
    return ["--lifetime", f"{total - margin}s", "--lifetime-stagger", f"{margin * 4 // 5}s"]


def jobqueue_cluster(
    kind: str, *, cores: int, memory: str, disk: str = "2GB", walltime: str | None = None
):
    """A dask-jobqueue cluster whose jobs each run ``cores`` one-thread worker processes.

    SLURM and PBS jobs ask for ``walltime`` (``HH:MM:SS``; default: dask-jobqueue's setting,
    ``jobqueue.<kind>.walltime``, 30 minutes unless configured) and their workers leave shortly
    before it. HTCondor jobs have no walltime.
    """
    import dask
    import dask_jobqueue

    classes = {
        "htcondor": dask_jobqueue.HTCondorCluster,
        "slurm": dask_jobqueue.SLURMCluster,
        "pbs": dask_jobqueue.PBSCluster,
    }
    if kind not in classes:
        raise ConfigError(f"unknown --cluster {kind!r}; choose one of {', '.join(JOBQUEUE_KINDS)}")
    if cores < 1:
        raise ConfigError(f"--cores must be >= 1, got {cores}")
    kwargs = {
        "cores": cores,
        "processes": cores,
        "memory": memory,
        "python": sys.executable,
        "job_script_prologue": [f"export {var}=1" for var in THREAD_VARS],
        "silence_logs": "error",
    }
    if kind == "htcondor":
        if walltime:
            raise ConfigError("--walltime is for --cluster slurm|pbs; HTCondor jobs have none")
        kwargs["disk"] = disk
    elif walltime:
        kwargs["walltime"] = walltime
        kwargs["worker_extra_args"] = lifetime_args(walltime)
    else:  # dask-jobqueue's configured walltime: workers leave before it when it is HH:MM:SS
        configured = dask.config.get(f"jobqueue.{kind}.walltime", None)
        with contextlib.suppress(ConfigError):
            kwargs["worker_extra_args"] = lifetime_args(str(configured))
    cls = classes[kind]
    try:
        return type(cls.__name__, (ReplaceEndedJobs, cls), {})(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"--cluster {kind}: {exc}") from None


@contextmanager
def open_client(
    workers: int,
    *,
    scheduler: str | None = None,
    cluster: str | None = None,
    jobs: int = 1,
    cores: int = 1,
    memory: str = "4GB",
    walltime: str | None = None,
    threads: int = 1,
) -> Iterator[tuple]:
    """A Dask client and how many tasks it runs at once (``None``: follow the cluster's workers):
    a local cluster of ``workers`` one-task processes with ``threads`` BLAS/OpenMP threads each,
    an existing cluster at ``scheduler``, or ``jobs`` dask-jobqueue jobs of ``cores`` workers.
    Closes whatever cluster it started. Shared by the search and ``ferlab analyse``.
    """
    if workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {workers}")
    import dask
    from distributed import Client, LocalCluster

    # A task whose worker dies is failed and retried by the driver, not re-run by the scheduler.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        if scheduler is not None:
            try:
                client = Client(scheduler, timeout="20s")
            except OSError as exc:
                raise ConfigError(f"cannot reach Dask scheduler {scheduler}: {exc}") from None
            client.wait_for_workers(1, timeout=120)
            slots = None  # workers may join or leave during the run
            owned = None
        elif cluster is not None:
            if jobs < 1:
                raise ConfigError(f"--jobs must be >= 1, got {jobs}")
            owned = jobqueue_cluster(cluster, cores=cores, memory=memory, walltime=walltime)
            # Adaptive with a fixed size: a job that ends (walltime, preemption) is replaced.
            owned.adapt(minimum_jobs=jobs, maximum_jobs=jobs)
            client = Client(owned)
            slots = jobs * cores
        else:
            owned = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",  # any free port: several runs may go at once
                silence_logs=logging.ERROR,
                env={var: str(threads) for var in THREAD_VARS},
            )
            client = Client(owned)
            slots = workers
        try:
            yield client, slots
        finally:
            client.close()
            if owned is not None:
                owned.close()


@contextmanager
def open_executor(
    workers: int,
    *,
    scheduler: str | None = None,
    cluster: str | None = None,
    jobs: int = 1,
    cores: int = 1,
    memory: str = "4GB",
    walltime: str | None = None,
) -> Iterator:
    """An executor for the trials; closes whatever cluster it started."""
    if scheduler is None and cluster is None and workers == 0:
        yield InlineExecutor()
        return
    with open_client(
        workers,
        scheduler=scheduler,
        cluster=cluster,
        jobs=jobs,
        cores=cores,
        memory=memory,
        walltime=walltime,
    ) as (client, slots):
        yield DaskExecutor(client, slots)
