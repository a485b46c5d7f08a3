"""optuna-dashboard shows ferlab's studies, as the README says: a journal file or a PostgreSQL URL."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from ferlab.search.storage import database_url, open_storage
from test_cluster import free_port

DASHBOARD = Path(sys.executable).parent / "optuna-dashboard"


def make_study(storage, name: str) -> list[float]:
    """A small finished study: three trials of one parameter; returns their values."""
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    for x in (0.1, 0.5, 0.9):
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(0.0, 1.0)})
        study.tell(trial, 1.0 - abs(trial.params["lr"] - x))
    return [t.value for t in study.trials]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


@contextlib.contextmanager
def dashboard(storage: str, log: Path) -> Iterator[str]:
    """``optuna-dashboard STORAGE`` on a free port of 127.0.0.1; yields its URL once it answers."""
    if not DASHBOARD.exists():
        pytest.skip("optuna-dashboard is not installed (pip install 'ferlab[dev]')")
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(DASHBOARD), storage, "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get_json(f"{url}/api/meta")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"optuna-dashboard did not answer:\n{log.read_text()}")
                time.sleep(0.2)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def check_listed(url: str, name: str, values: list[float]) -> None:
    """The study is listed by name, and its page shows its three finished trials."""
    studies = get_json(f"{url}/api/studies")["study_summaries"]
    (summary,) = [s for s in studies if s["study_name"] == name]
    detail = get_json(f"{url}/api/studies/{summary['study_id']}")
    assert detail["name"] == name
    assert [t["state"] for t in detail["trials"]] == ["Complete"] * 3
    assert [t["values"][0] for t in detail["trials"]] == pytest.approx(values)


def test_dashboard_shows_a_journal_study(tmp_path):
    journal = tmp_path / "runs" / "search" / "demo" / "study.journal"
    values = make_study(open_storage(str(journal)), "demo")
    # The README's form: the journal file's path, as it is.
    with dashboard(str(journal), tmp_path / "dashboard.log") as url:
        check_listed(url, "demo", values)


def test_dashboard_shows_a_postgresql_study(tmp_path):
    from test_search import POSTGRES, _postgres_ready

    reason = _postgres_ready()
    if reason:
        pytest.skip(reason)
    name = f"ferlab-dashboard-{uuid.uuid4().hex[:8]}"
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which ferlab does not install:
    # the README's form names the driver, as ferlab itself does.
    db = database_url(POSTGRES)
    assert db.startswith("postgresql+psycopg2://")
    storage = optuna.storages.RDBStorage(db)
    values = make_study(storage, name)
    try:
        with dashboard(db, tmp_path / "dashboard.log") as url:
            check_listed(url, name, values)
    finally:
        optuna.delete_study(study_name=name, storage=storage)
