"""Where ``ferlab analyse``'s tasks run: this process, a pool of processes each loading the
model once, or a Dask cluster; one small interface (submit, wait_first, close, slots)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import time
from collections.abc import Iterator

from ferlab.collection.work import Settings
from ferlab.errors import FerlabError


class InlinePool:
    """Runs each task in the driver, at once (``--workers 0``)."""

    slots = 1

    def submit(self, fn, *args) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def wait_first(self, futures, timeout: float | None = None) -> list:
        return list(futures)

    def close(self) -> None:
        """Nothing runs in the background."""


class ProcessPool:
    """``workers`` processes (started fresh, not forked), each loading the model once with
    ``settings.threads`` threads; a pool broken by a killed process is started again."""

    def __init__(self, workers: int, settings: Settings, *, initializer=None) -> None:
        self.slots = workers
        self._args = (workers, settings, initializer)
        self._pool = self._start()

    def _start(self) -> concurrent.futures.ProcessPoolExecutor:
        workers, settings, initializer = self._args
        from ferlab.collection.work import init_process

        return concurrent.futures.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=initializer or init_process,
            initargs=(settings,),
        )

    def submit(self, fn, *args):
        try:
            return self._pool.submit(fn, *args)
        except concurrent.futures.BrokenExecutor:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._start()
            return self._pool.submit(fn, *args)

    def wait_first(self, futures, timeout: float | None = None) -> list:
        done, _ = concurrent.futures.wait(
            list(futures), timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED
        )
        return list(done)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DaskPool:
    """Tasks on a Dask client, their results taken as they complete (``distributed.as_completed``,
    so that waiting costs the same with 10 or 10,000 tasks in flight); ``slots`` None follows the
    cluster's worker threads (counted at most once a second), so that workers that join are used
    and lost ones not waited for."""

    def __init__(self, client, slots: int | None) -> None:
        from distributed import as_completed

        self.client = client
        self._fixed = slots
        self._counted, self._counted_at = 1, float("-inf")
        self._completed = as_completed()

    @property
    def slots(self) -> int:
        if self._fixed is not None:
            return max(1, self._fixed)
        now = time.monotonic()
        if now - self._counted_at >= 1.0:
            self._counted = max(1, sum(self.client.nthreads().values()))
            self._counted_at = now
        return self._counted

    def submit(self, fn, *args):
        future = self.client.submit(fn, *args, pure=False)
        self._completed.add(future)
        return future

    def wait_first(self, futures, timeout: float | None = None) -> list:
        """The futures done now, or as soon as one is (none when ``timeout`` passes first)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            done = self._completed.next_batch(block=False)
            if done or (deadline is not None and time.monotonic() >= deadline):
                return [f for f in done if f in futures]
            time.sleep(0.002)

    def close(self) -> None:
        """The client and cluster are closed by whoever opened them."""
        self._completed.clear()


@contextlib.contextmanager
def open_pool(
    settings: Settings,
    *,
    workers: int = 0,
    dask: bool = False,
    scheduler: str | None = None,
    cluster: str | None = None,
    jobs: int = 1,
    cores: int = 1,
    memory: str = "4GB",
    walltime: str | None = None,
) -> Iterator:
    """Where tasks run: this process (``workers`` 0), ``workers`` processes here (a local Dask
    cluster of them with ``dask``), a Dask cluster at ``scheduler``, or ``jobs`` batch jobs of
    ``cores`` workers through dask-jobqueue (``cluster``: slurm, pbs or htcondor)."""
    if workers < 0:
        raise FerlabError(f"--workers must be >= 0, got {workers}")
    if settings.threads < 1:
        raise FerlabError(f"--threads must be >= 1, got {settings.threads}")
    if scheduler is None and cluster is None and not dask:
        pool = InlinePool() if workers == 0 else ProcessPool(workers, settings)
        try:
            yield pool
        finally:
            pool.close()
        return
    if dask and workers == 0 and scheduler is None and cluster is None:
        raise FerlabError("--dask starts a local cluster of --workers N processes: give N >= 1")
    from ferlab.search.cluster import open_client

    with open_client(workers, scheduler=scheduler, cluster=cluster, jobs=jobs, cores=cores,
                     memory=memory, walltime=walltime,
                     threads=settings.threads) as (client, slots):  # fmt: skip
        yield DaskPool(client, slots)
