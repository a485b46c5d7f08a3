"""A search on a real Dask cluster of separate processes, started as the README says.

`dask scheduler` and `dask worker` run as their own OS processes and `ferlab search ...
--scheduler` drives them, with a PostgreSQL study. Mid-search a second worker joins (its slot is
used at once) and the first is killed mid-trial (its trial fails and is retried once); the study
ends with exactly the requested number of finished trials.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import psutil
import pytest
from optuna.trial import FrozenTrial, TrialState

BIN = Path(sys.executable).parent
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
ONE_THREAD = {var: "1" for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
# Trials of ~1-2 s on one core: the digits data, a wide net, small batches, no early stop.
SPACE = """
[search]
seed = 0

[config]
seed = 0

[config.data]
dataset = "digits"
val_size = 0.15
preprocessing = "standardize"

[config.model]
hidden_dims = [512, 512]
dropout = 0.0
reg = 0.0

[config.solver]
optimizer = "sgd_momentum"
lr = 0.005
batch_size = 16
epochs = 12
patience = 100

[params."solver.lr"]
type = "log-float"
low = 0.001
high = 0.01
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, check: Callable, timeout: float, explain: Callable[[], str] = str):
    """Poll ``check`` until it returns something true; return it, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{explain()}")


class Processes:
    """OS processes started by a test, each in its own process group, all killed at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 (the child writes to it)
        with log:
            proc = subprocess.Popen(
                args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started[name] = proc
        return proc

    def kill(self, name: str) -> None:
        """SIGKILL a process and everything it started (a `dask worker` and its nanny's child)."""
        proc = self.started[name]
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def pids(self, name: str) -> set[int]:
        """The process and its descendants, while it runs."""
        try:
            parent = psutil.Process(self.started[name].pid)
            return {parent.pid} | {child.pid for child in parent.children(recursive=True)}
        except psutil.NoSuchProcess:
            return set()

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self, lines: int = 40) -> str:
        return "\n".join(
            f"--- {name} (last {lines} lines):\n" + "\n".join(self.log(name).splitlines()[-lines:])
            for name in self.started
        )

    def close(self) -> None:
        """Kill every process group not yet reaped (a group can outlive its leader), and reap.

        A leader not yet reaped keeps its pid, so its group id cannot name anyone else's group.
        """
        for proc in self.started.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture
def processes(tmp_path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.close()


@pytest.fixture
def postgres() -> str:
    from test_search import POSTGRES, _postgres_ready

    reason = _postgres_ready()
    if reason:
        pytest.skip(reason)
    return POSTGRES


def load_trials(storage, name: str) -> list[FrozenTrial]:
    """The study's trials, or none while the driver has not created it yet."""
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return []
    return study.get_trials(deepcopy=False)


def worker_of(trial: FrozenTrial) -> int | None:
    """The pid of the process that ran a trial (its ``worker`` attribute: ``HOST:PID``)."""
    worker = trial.user_attrs.get("worker")
    return int(worker.rsplit(":", 1)[1]) if worker else None


def test_search_on_a_dask_cluster_keeps_counts_through_a_killed_and_a_new_worker(
    tmp_path, processes, postgres
):
    from ferlab.search.storage import open_storage

    n_trials = 10
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, **ONE_THREAD}
    # As the README says: a scheduler, workers with one thread (and one BLAS thread) each, then
    # `ferlab search ... --scheduler tcp://HOST:PORT --storage postgresql://...`. The idle and
    # death timeouts end these processes even if this test's own process is killed.
    processes.start("scheduler", [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1",
                                  "--port", str(port), "--no-dashboard",
                                  "--idle-timeout", "300"], env)  # fmt: skip
    worker_args = [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--nworkers", "1",
                   "--no-dashboard", "--death-timeout", "60"]  # fmt: skip
    processes.start("worker-a", worker_args, env)
    name = f"ferlab-cluster-{uuid.uuid4().hex[:8]}"
    driver = processes.start("driver", [str(BIN / "ferlab"), "search", "random", str(space),
                                        "--trials", str(n_trials), "--scheduler", address,
                                        "--storage", postgres, "--study", name,
                                        "--pruner", "none", "--quiet"], env)  # fmt: skip
    storage = open_storage(postgres)
    started = time.monotonic()
    try:

        def running_on(pids: set[int]) -> list[FrozenTrial]:
            trials = load_trials(storage, name)
            return [t for t in trials if t.state == TrialState.RUNNING and worker_of(t) in pids]

        def done_on(pids: set[int]) -> list[FrozenTrial]:
            trials = load_trials(storage, name)
            return [t for t in trials if t.state in FINISHED and worker_of(t) in pids]

        # Worker A alone finishes a trial.
        wait_for("worker A to finish a trial", lambda: done_on(processes.pids("worker-a")), 90,
                 processes.logs)  # fmt: skip
        a_pids = processes.pids("worker-a")
        assert driver.poll() is None, processes.logs()
        # Worker B joins mid-search, and its slot is used at once: A and B run trials together.
        processes.start("worker-b", worker_args, env)
        wait_for("trials running on workers A and B at once",
                 lambda: running_on(a_pids) and running_on(processes.pids("worker-b")),
                 60, processes.logs)  # fmt: skip
        b_pids = processes.pids("worker-b")
        # Kill worker A (SIGKILL, with its nanny) mid-trial: after an epoch, long before the last.
        victim = wait_for("a trial in progress on worker A", lambda: next(
            (t for t in running_on(a_pids) if 1 <= len(t.intermediate_values) <= 6), None),
            30, processes.logs)  # fmt: skip
        processes.kill("worker-a")
        victim_now = load_trials(storage, name)[victim.number]
        assert victim_now.state == TrialState.RUNNING, "the victim finished before the kill"

        try:
            rc = driver.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the search did not finish in 90 s after the kill\n{processes.logs()}")
        assert rc == 0, processes.logs()
        trials = load_trials(storage, name)
    finally:
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=storage)
    elapsed = time.monotonic() - started

    finished = [t for t in trials if t.state in FINISHED]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    # Exactly the requested count, and nothing left behind or counted twice: the one killed
    # trial failed, and its retry is the only extra trial.
    assert len(finished) == n_trials, [(t.number, t.state.name) for t in trials]
    assert [t.number for t in failed] == [victim.number]
    assert len(trials) == n_trials + 1
    assert "lost" in failed[0].user_attrs.get("error", ""), failed[0].user_attrs
    assert worker_of(failed[0]) in a_pids
    retries = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retries) == 1 and retries[0].state in FINISHED
    assert retries[0].params == victim.params
    # Every finished trial ran on A or B; the newcomer took trials while A lived, and after.
    ran_on = [worker_of(t) for t in finished]
    assert all(pid in a_pids | b_pids for pid in ran_on), (ran_on, a_pids, b_pids)
    assert sum(pid in a_pids for pid in ran_on) >= 1
    assert sum(pid in b_pids for pid in ran_on) >= 2
    assert retries[0].number > victim.number and worker_of(retries[0]) in b_pids
    assert f"study {name}" in processes.log("driver")
    assert elapsed < 150, f"the cluster search took {elapsed:.0f} s"
