"""A training run's folder: what every kind of training writes around its loop.

A run goes through one :class:`RunFolder` from start to end::

    folder = RunFolder(out_dir, checkpoint_name=CHECKPOINT_NAME)
    folder.start(config, splits, resume=resume, may_change=FC_MAY_CHANGE)  # run.json
    ...  # the loop, writing folder.checkpoint after every epoch; save the model
    folder.record(history, config, best_epoch=best_epoch)  # history, config, curves
    folder.finish({...summary, **folder.loop_summary(loop, history, n_train, n_val)})

Files (all written through :mod:`ferlab.common.files`, so each appears whole or not at all):
``run.json`` (config and data fingerprint, for the resume check), ``history.json``,
``config.json``, ``loss.png`` and ``accuracy.png``, ``summary.json``; the checkpoint is removed
once the summary is written. A command that writes other records into a folder of its own
(``extend.json``, ``compare.json``) writes them with :meth:`RunFolder.write_json`.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel

from ferlab.common.files import write_json_atomic
from ferlab.errors import ConfigError
from ferlab.settings.loading import changed_keys


class Part(Protocol):
    """A labelled part of the data: images (N, ...) and labels (N,)."""

    images: np.ndarray
    labels: np.ndarray


class Splits(Protocol):
    """What the run folder reads of a run's data (:class:`ferlab.data.split.SplitImages`)."""

    train: Part
    val: Part


class Loop(Protocol):
    """What the summary reads of a finished training loop (a Solver or a CNN trainer)."""

    epoch: int
    best_epoch: int
    stopped_early: bool


def config_record(config: BaseModel | dict) -> dict:
    """A run's config as the plain data its records store: a checked settings object dumped,
    or a config table as given."""
    return config.model_dump() if isinstance(config, BaseModel) else config


def data_digest(splits: Splits) -> str:
    """A fingerprint of the training and validation parts (images and labels)."""
    digest = hashlib.sha256()
    for part in (splits.train, splits.val):
        digest.update(np.ascontiguousarray(part.labels).tobytes())
        digest.update(np.ascontiguousarray(part.images).tobytes())
    return digest.hexdigest()


def read_record(path: Path) -> dict | None:
    """The JSON record at ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def completed(config: dict, complete: Callable[[dict], dict] | None) -> dict:
    """A stored run's ``config`` completed by ``complete`` (its kind's validation, which fills
    in the defaults of keys added since the run started); as stored when there is none, or
    when it no longer validates."""
    if complete is None:
        return config
    try:
        return complete(config)
    except ConfigError:
        return config


def check_resume(
    stored: dict,
    record: dict,
    may_change: tuple[str, ...],
    where: Path,
    complete: Callable[[dict], dict] | None = None,
) -> None:
    """Refuse a resume whose config differs from the ``stored`` run's beyond ``may_change``,
    or whose data differ, with a message naming what differs."""
    config = record["config"]
    before = completed(stored["config"], complete)
    changed = [k for k in changed_keys(before, config) if k not in may_change]
    if changed:
        raise ConfigError(
            f"--resume with another config: {', '.join(changed)} differ from the "
            f"checkpoint's run ({where}); only {', '.join(may_change)} may change"
        )
    if stored.get("data_digest") != record["data_digest"]:
        raise ConfigError(
            f"--resume with other data: the data at {config['data']['path']} is not the "
            "data the checkpoint's run started with"
        )


class RunFolder:
    """The folder of one training run; ``checkpoint_name`` is the loop's checkpoint file
    (``checkpoint.npz``, ``checkpoint.safetensors``). The folder is made when missing, and the
    run's clock starts here."""

    def __init__(self, path: str | Path, *, checkpoint_name: str | None = None) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoint_name = checkpoint_name
        self.started = time.perf_counter()

    @property
    def checkpoint(self) -> Path | None:
        """The checkpoint the loop writes after every epoch (None for a loop without one)."""
        return None if self.checkpoint_name is None else self.path / self.checkpoint_name

    def seconds(self) -> float:
        """Seconds since the run started, to two decimals."""
        return round(time.perf_counter() - self.started, 2)

    def write_json(self, name: str, payload: Any) -> Path:
        """Write ``payload`` as ``name`` in the folder, atomically; return its path."""
        return write_json_atomic(self.path / name, payload)

    def start(
        self,
        config: BaseModel | dict,
        splits: Splits,
        *,
        resume: str | Path | None = None,
        may_change: tuple[str, ...] = (),
        complete: Callable[[dict], dict] | None = None,
    ) -> None:
        """Record the run's config and data fingerprint in ``run.json`` as it starts.

        On ``resume`` (a checkpoint file), compare with the record in the checkpoint's folder:
        a changed key not in ``may_change``, or other data, is refused with a message naming
        them; a missing record is warned of. ``complete`` (the kind's config validation) fills
        the stored config's keys added since with their defaults before comparing.
        """
        record = {"config": config_record(config), "data_digest": data_digest(splits)}
        if resume is not None:
            stored_path = Path(resume).parent / "run.json"
            stored = read_record(stored_path)
            if stored is None:
                warnings.warn(
                    f"{stored_path} is missing: cannot check that --resume uses the same config",
                    stacklevel=2,
                )
            else:
                check_resume(stored, record, may_change, stored_path, complete)
        self.write_json("run.json", record)

    def record(self, history: dict, config: BaseModel | dict, *, best_epoch: int = 0) -> None:
        """Write the finished loop's ``history.json``, ``config.json`` and its curves
        (``loss.png``, ``accuracy.png``, ``best_epoch`` marked when known)."""
        from ferlab.common.plots import plot_history

        self.write_json("history.json", history)
        self.write_json("config.json", config_record(config))
        plot_history(history, self.path, title=self.path.name, best_epoch=best_epoch or None)

    def loop_summary(self, loop: Loop, history: dict, n_train: int, n_val: int) -> dict:
        """The part of ``summary.json`` every kind of training shares: epochs, best epoch,
        early stop, the run's and the loop's seconds, and the sizes of the parts."""
        return {
            "epochs": loop.epoch,
            "best_epoch": loop.best_epoch,
            "stopped_early": loop.stopped_early,
            "seconds": self.seconds(),
            "train_seconds": round(float(sum(history["seconds"])), 2),
            "n_train": int(n_train),
            "n_val": int(n_val),
        }

    def finish(self, summary: dict) -> dict:
        """Write ``summary.json`` and remove the checkpoint, the run being complete; return
        the summary."""
        self.write_json("summary.json", summary)
        if self.checkpoint is not None:
            self.checkpoint.unlink(missing_ok=True)
        return summary
