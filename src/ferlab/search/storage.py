"""Where studies live: an Optuna journal file by default, a PostgreSQL URL for many machines."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna

from ferlab.errors import ConfigError

JOURNAL_NAME = "study.journal"
DEFAULT_STUDY_ROOT = Path("runs/search")
# A trial whose worker sent no heartbeat for GRACE_S seconds is failed and retried once.
HEARTBEAT_S = 20
GRACE_S = 60
MAX_RETRY = 1


def study_dir(study: str, root: str | Path | None = None) -> Path:
    """The folder of a study's journal and reports: ``runs/search/<study>`` by default."""
    return Path(root) / study if root is not None else DEFAULT_STUDY_ROOT / study


def storage_spec(storage: str | None, study: str, root: str | Path | None = None) -> str:
    """The storage a study uses: a URL as given, or the absolute path of its journal file."""
    if storage:
        return storage if is_rdb(storage) else str(Path(storage).expanduser().resolve())
    journal = study_dir(study, root) / JOURNAL_NAME
    parent = study_dir(study.rsplit(".", 1)[0], root) / JOURNAL_NAME
    if "." in study and not journal.exists() and parent.exists():
        journal = parent  # a sequential step ("NAME.2-dropout") lives in its search's journal
    return str(journal.resolve())


def is_rdb(spec: str) -> bool:
    """Whether a storage spec is a database URL (rather than a journal file path)."""
    return "://" in spec


def database_url(spec: str) -> str:
    """The SQLAlchemy URL of an RDB spec; plain ``postgresql://`` uses the psycopg2 driver."""
    if spec.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg2://" + spec.split("://", 1)[1]
    return spec


def describe(spec: str) -> str:
    """A storage spec safe to print (no password)."""
    if is_rdb(spec) and "@" in spec:
        scheme, rest = spec.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return spec


def open_storage(spec: str, *, heartbeat_s: int = HEARTBEAT_S, grace_s: int = GRACE_S):
    """An Optuna storage for ``spec``; RDB storages get heartbeats and retry stale trials once."""
    if not is_rdb(spec):
        path = Path(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                database_url(spec),
                heartbeat_interval=heartbeat_s,
                grace_period=grace_s,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=MAX_RETRY
                ),
            )
    except Exception as exc:  # SQLAlchemy raises many kinds; all mean the URL does not work
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot open storage {describe(spec)}: {first_line}") from None
