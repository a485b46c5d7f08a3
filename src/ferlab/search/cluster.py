"""Where trials run: in this process, a local Dask cluster, an existing one, or batch jobs."""

from __future__ import annotations

import concurrent.futures
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from ferlab.errors import ConfigError
from ferlab.search.trial import TrialOutcome

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
JOBQUEUE_KINDS = ("htcondor", "slurm", "pbs")


class InlineExecutor:
    """Runs each trial in the driver process, one at a time (``--workers 0``; debugging, tests)."""

    slots = 1

    def submit(self, fn, *args) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_result(fn(*args))
        return future

    def wait_first(self, futures) -> list:
        return list(futures)

    def outcome(self, future) -> TrialOutcome:
        return future.result()

    def cancel(self, futures) -> None:
        """Nothing runs in the background."""


class DaskExecutor:
    """Submits trials to a Dask client and reports a lost worker as a failed trial."""

    def __init__(self, client, slots: int) -> None:
        self.client = client
        self.slots = max(1, slots)

    def submit(self, fn, *args):
        return self.client.submit(fn, *args, pure=False)

    def wait_first(self, futures) -> list:
        from distributed import wait

        return list(wait(list(futures), return_when="FIRST_COMPLETED").done)

    def outcome(self, future) -> TrialOutcome:
        try:
            return future.result()
        except (
            Exception
        ) as exc:  # KilledWorker, CommClosedError...: the worker died under the trial
            return TrialOutcome("fail", message=f"worker lost: {type(exc).__name__}: {exc}")

    def cancel(self, futures) -> None:
        self.client.cancel(list(futures))


def jobqueue_cluster(
    kind: str, *, cores: int, memory: str, disk: str = "2GB", walltime: str | None = None
):
    """A dask-jobqueue cluster whose jobs each run ``cores`` one-thread worker processes."""
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
        kwargs["disk"] = disk
    if walltime and kind != "htcondor":
        kwargs["walltime"] = walltime
    try:
        return classes[kind](**kwargs)
    except ValueError as exc:
        raise ConfigError(f"--cluster {kind}: {exc}") from None


@contextmanager
def open_executor(
    workers: int,
    *,
    scheduler: str | None = None,
    cluster: str | None = None,
    jobs: int = 1,
    cores: int = 1,
    memory: str = "4GB",
) -> Iterator:
    """An executor for the trials; closes whatever cluster it started."""
    if scheduler is None and cluster is None and workers == 0:
        yield InlineExecutor()
        return
    if workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {workers}")
    import dask
    from distributed import Client, LocalCluster

    # A trial whose worker dies is failed and retried by the driver, not re-run by the scheduler.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        if scheduler is not None:
            try:
                client = Client(scheduler, timeout="20s")
            except OSError as exc:
                raise ConfigError(f"cannot reach Dask scheduler {scheduler}: {exc}") from None
            client.wait_for_workers(1, timeout=120)
            slots = sum(client.nthreads().values())
            owned = None
        elif cluster is not None:
            owned = jobqueue_cluster(cluster, cores=cores, memory=memory)
            owned.scale(jobs=jobs)
            client = Client(owned)
            slots = jobs * cores
        else:
            owned = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",  # any free port: several searches may run at once
                silence_logs=logging.ERROR,
                env={var: "1" for var in THREAD_VARS},
            )
            client = Client(owned)
            slots = workers
        try:
            yield DaskExecutor(client, slots)
        finally:
            client.close()
            if owned is not None:
                owned.close()
