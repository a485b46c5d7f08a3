"""Where studies live: an Optuna journal file by default, a PostgreSQL URL for many machines."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna

from ferlab.errors import ConfigError

JOURNAL_NAME = "study.journal"
DEFAULT_STUDY_ROOT = Path("runs/search")
# A trial whose worker sent no heartbeat for GRACE_S seconds is failed and retried once.
HEARTBEAT_S = 20
GRACE_S = 60
MAX_RETRY = 1
POOL_SIZE = 2  # database connections a driver keeps open
# Processes that open a fresh database at once all try to create Optuna's tables; all but one
# fail on PostgreSQL's catalog constraints, and succeed when they try again after the first.
SCHEMA_ATTEMPTS = 6
_HELD_LOCKS: dict[str, int] = {}  # journal path -> nesting depth of driver_lock in this process


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


def open_storage(
    spec: str,
    *,
    heartbeat_s: int | None = None,
    grace_s: int | None = None,
    pooled: bool = True,
    worker: bool = False,
):
    """An Optuna storage for ``spec``; RDB storages get heartbeats and retry stale trials once.

    An RDB storage keeps at most :data:`POOL_SIZE` connections open; without ``pooled`` it holds
    none between writes (a worker's writes are a few per epoch; 200 workers must not hold 200).
    A ``worker`` storage (epoch reports, heartbeats) commits without waiting for the database's
    disk (PostgreSQL's ``synchronous_commit = off``): a database crash may lose its last
    fraction of a second of reports, never a trial's creation or final state, which the driver
    writes with full durability.

    Many processes may open a fresh database at once (a search's workers starting together):
    the one that creates Optuna's tables wins, the others try again, up to
    :data:`SCHEMA_ATTEMPTS` times in about 3 s.

    ``heartbeat_s`` and ``grace_s`` default to :data:`HEARTBEAT_S` and :data:`GRACE_S` (read at
    each call, so that a test can shorten them).
    """
    heartbeat_s = HEARTBEAT_S if heartbeat_s is None else heartbeat_s
    grace_s = GRACE_S if grace_s is None else grace_s
    if not is_rdb(spec):
        path = Path(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        check_journal(path, repair=False)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(1, SCHEMA_ATTEMPTS + 1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    database_url(spec),
                    engine_kwargs=_engine_options(pooled, worker, spec.startswith("postgres")),
                    heartbeat_interval=heartbeat_s,
                    grace_period=grace_s,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=MAX_RETRY
                    ),
                )
        except (IntegrityError, ProgrammingError) as exc:  # another process making the tables
            if attempt == SCHEMA_ATTEMPTS:
                raise _storage_error(spec, exc) from None
            time.sleep(0.1 * 2 ** (attempt - 1))
        except Exception as exc:  # SQLAlchemy raises many kinds; all mean the URL does not work
            raise _storage_error(spec, exc) from None


def _storage_error(spec: str, exc: Exception) -> ConfigError:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ConfigError(f"cannot open storage {describe(spec)}: {first_line}")


def create_running_trial(
    storage, study_id: int, params: dict, distributions: dict, user_attrs: dict
) -> tuple[int, int]:
    """Write a new RUNNING trial with its parameters and user attributes; ``(trial id, number)``.

    One write whatever the storage: a journal record, or one database transaction that also
    records the trial's first heartbeat. Optuna's own template path spends three statements per
    parameter and then reads the trial back; at 14,000 trials that, not the trials, set the pace.
    """
    template = optuna.trial.create_trial(
        state=optuna.trial.TrialState.RUNNING,
        params=params,
        distributions=distributions,
        user_attrs=user_attrs,
    )
    if not isinstance(storage, optuna.storages._CachedStorage):
        trial_id = storage.create_new_trial(study_id, template_trial=template)
        return trial_id, storage.get_trial(trial_id).number
    return _insert_running_trial(storage._backend, study_id, template)


def _insert_running_trial(rdb, study_id: int, template) -> tuple[int, int]:
    """:func:`create_running_trial` for an RDB storage, with Optuna's tables and numbering."""
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(rdb.scoped_session) as session:
        # Optuna's lock for numbering: a trial's number counts the study's earlier trials.
        models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
        trial = models.TrialModel(
            study_id=study_id,
            number=None,
            state=optuna.trial.TrialState.RUNNING,
            datetime_start=template.datetime_start,
        )
        session.add(trial)
        session.flush()
        trial.number = _count_past_trials(rdb, session, trial)
        for name, distribution in template.distributions.items():
            session.add(
                models.TrialParamModel(
                    trial_id=trial.trial_id,
                    param_name=name,
                    param_value=distribution.to_internal_repr(template.params[name]),
                    distribution_json=distribution_to_json(distribution),
                )
            )
        for key, value in template.user_attrs.items():
            session.add(
                models.TrialUserAttributeModel(
                    trial_id=trial.trial_id, key=key, value_json=json.dumps(value)
                )
            )
        if rdb.heartbeat_interval is not None:
            session.add(models.TrialHeartbeatModel(trial_id=trial.trial_id))
        session.flush()
        return trial.trial_id, trial.number


def report_value(storage, trial_id: int, step: int, value: float) -> None:
    """Store a running trial's value at ``step`` (an epoch report), as Optuna's storage would.

    On PostgreSQL, one statement: Optuna's own path reads the trial and the step first (three
    statements), and reports are most of a search's writes. A finished trial is refused alike
    (``UpdateFinishedTrialError``).
    """
    rdb = storage._backend if isinstance(storage, optuna.storages._CachedStorage) else storage
    if not (
        isinstance(rdb, optuna.storages.RDBStorage) and rdb.engine.dialect.name == "postgresql"
    ):
        storage.set_trial_intermediate_value(trial_id, step, value)
        return
    from optuna.storages._rdb import models
    from sqlalchemy import literal, select
    from sqlalchemy.dialects.postgresql import insert

    table = models.TrialIntermediateValueModel.__table__
    stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
    running = models.TrialModel.__table__
    source = select(
        literal(trial_id, running.c.trial_id.type),
        literal(step, table.c.step.type),
        literal(stored, table.c.intermediate_value.type),
        literal(kind, table.c.intermediate_value_type.type),
    ).where(running.c.trial_id == trial_id, running.c.state == optuna.trial.TrialState.RUNNING)
    columns = ["trial_id", "step", "intermediate_value", "intermediate_value_type"]
    statement = insert(table).from_select(columns, source)
    statement = statement.on_conflict_do_update(
        index_elements=["trial_id", "step"],
        set_={c: statement.excluded[c] for c in columns[2:]},
    )
    with rdb.engine.begin() as connection:
        written = connection.execute(statement).rowcount
    if written == 0:
        raise optuna.exceptions.UpdateFinishedTrialError(
            f"trial {trial_id} is not running: cannot report step {step}"
        )


# (database URL, study id) -> (trial id, number) of the last trial this process created there.
_LAST_CREATED: dict[tuple[str, int], tuple[int, int]] = {}


def _count_past_trials(rdb, session, trial) -> int:
    """The study's trials created before ``trial``: its number, as Optuna counts it.

    Optuna counts all of them (a scan growing with the study). Creators hold the study's row
    lock, so trial ids grow in creation order: counting only the trials created since this
    process's last one, between the two ids, gives the same number.
    """
    from optuna.storages._rdb import models
    from sqlalchemy import func

    key = (str(rdb.engine.url), trial.study_id)
    last = _LAST_CREATED.get(key)
    if last is None:
        number = trial.count_past_trials(session)
    else:
        last_id, last_number = last
        between = session.query(func.count(models.TrialModel.trial_id)).filter(
            models.TrialModel.study_id == trial.study_id,
            models.TrialModel.trial_id > last_id,
            models.TrialModel.trial_id < trial.trial_id,
        )
        number = last_number + 1 + between.scalar()
    _LAST_CREATED[key] = (trial.trial_id, number)
    return number


def _engine_options(pooled: bool, worker: bool, postgres: bool) -> dict:
    from sqlalchemy.pool import NullPool

    options: dict = {}
    if postgres:  # named, so that pg_stat_activity shows which process holds a connection
        role = "worker" if worker else "driver"
        connect = {"application_name": f"ferlab search {role} {os.getpid()}"}
        if worker:
            connect["options"] = "-c synchronous_commit=off"
        options["connect_args"] = connect
    if not pooled:
        return {**options, "poolclass": NullPool}
    return {**options, "pool_size": POOL_SIZE, "max_overflow": 0, "pool_pre_ping": True}


def check_journal(path: str | Path, *, repair: bool) -> str | None:
    """Check a journal file line by line; with ``repair``, set a torn last line aside.

    A writer killed mid-line (disk full, SIGKILL) leaves a last line without its newline; the
    next writer would append onto it and corrupt the study for good. With ``repair`` (only a
    driver holding :func:`driver_lock` may), the fragment is moved to ``JOURNAL.torn-TIME`` and
    every complete record kept; returns what was done. A corrupt complete line is an error
    naming its line number.
    """
    path = Path(path)
    if not path.is_file():
        return None
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    for number, line in enumerate(complete.splitlines(), start=1):
        try:
            json.loads(line)
        except ValueError:
            raise ConfigError(
                f"{path}: line {number} is not a journal record (the file was damaged); "
                "move it aside or restore it from a backup"
            ) from None
    if not repair or len(complete) == len(data):
        return None
    aside = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%dT%H%M%S')}")
    aside.write_bytes(data[len(complete) :])
    os.truncate(path, len(complete))
    return f"{path}: set aside a half-written last record ({len(data) - len(complete)} bytes) in {aside.name}"


@contextlib.contextmanager
def driver_lock(storage: str) -> Iterator[None]:
    """Hold the one-driver lock of a journal study (re-entrant within this process).

    A second driver on the same journal would fail the first one's live trials; it is refused
    instead. The lock is an ``flock`` on ``JOURNAL.driver-lock``, so a killed driver leaves none
    behind.
    PostgreSQL studies need no lock: heartbeats tell live trials from dead ones.
    """
    if is_rdb(storage):
        yield
        return
    key = str(Path(storage).resolve())
    if key in _HELD_LOCKS:
        _HELD_LOCKS[key] += 1
        try:
            yield
        finally:
            _HELD_LOCKS[key] -= 1
        return
    lock_path = Path(key + ".driver-lock")  # not ".lock": Optuna's own file lock uses that name
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise ConfigError(
                f"{key}: another search driver ({holder}) is running this study; wait for it "
                "to finish, or stop it and run `ferlab search resume`"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        _HELD_LOCKS[key] = 1
        note = check_journal(key, repair=True)
        if note:
            warnings.warn(note, stacklevel=3)
        try:
            yield
        finally:
            del _HELD_LOCKS[key]
    finally:
        os.close(fd)  # closing the descriptor releases the flock
