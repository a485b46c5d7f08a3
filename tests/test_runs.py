"""The run folder every kind of training shares, and the bookkeeping both loops share (best
epoch, early stopping on a monitor, history)."""

import json
import math

import numpy as np
import pytest

from ferlab.data.images import LabeledImages
from ferlab.data.split import SplitImages
from ferlab.errors import ConfigError
from ferlab.nn.tracking import DEFAULT_MONITOR, BestEpoch, restored_history
from ferlab.runs import RunFolder, data_digest

CONFIG = {"seed": 0, "data": {"path": "a"}, "solver": {"epochs": 3, "lr": 0.1}}


def tiny_splits(offset: int = 0) -> SplitImages:
    rng = np.random.default_rng(offset)
    part = LabeledImages(
        rng.integers(0, 255, (6, 4, 4)).astype(np.uint8),
        np.arange(6) % 2,
        ["x", "y"],
        np.array(["training"] * 6),
    )
    return SplitImages(part, part, {}, ["x", "y"], (4, 4))


def started(tmp_path, config=CONFIG, splits=None) -> RunFolder:
    folder = RunFolder(tmp_path / "first", checkpoint_name="checkpoint.npz")
    folder.start(config, splits or tiny_splits())
    (folder.path / "checkpoint.npz").write_bytes(b"state")
    return folder


def test_a_run_records_its_config_and_data_and_a_resume_may_change_only_what_it_may(tmp_path):
    first = started(tmp_path)
    record = json.loads((first.path / "run.json").read_text())
    assert record == {"config": CONFIG, "data_digest": data_digest(tiny_splits())}
    checkpoint = first.checkpoint
    again = RunFolder(tmp_path / "again")
    moved = {**CONFIG, "data": {"path": "b"}, "solver": {"epochs": 9, "lr": 0.1}}
    again.start(moved, tiny_splits(), resume=checkpoint, may_change=("data.path", "solver.epochs"))
    assert json.loads((again.path / "run.json").read_text())["config"] == moved
    other_lr = {**CONFIG, "solver": {"epochs": 3, "lr": 0.2}}
    with pytest.raises(ConfigError, match=r"solver.lr differ .* only data.path may change"):
        again.start(other_lr, tiny_splits(), resume=checkpoint, may_change=("data.path",))
    with pytest.raises(ConfigError, match="--resume with other data"):
        again.start(CONFIG, tiny_splits(1), resume=checkpoint)


def test_a_resume_without_the_runs_record_is_warned_of(tmp_path):
    lone = tmp_path / "lone"
    lone.mkdir()
    with pytest.warns(UserWarning, match="cannot check that --resume uses the same config"):
        RunFolder(tmp_path / "run").start(CONFIG, tiny_splits(), resume=lone / "checkpoint.npz")


def test_finishing_writes_history_config_curves_summary_and_removes_the_checkpoint(tmp_path):
    folder = started(tmp_path)
    history = {"train_loss": [1.0, 0.5], "val_loss": [1.1, 0.9], "train_acc": [0.4, 0.6],
               "val_acc": [0.3, 0.5], "seconds": [0.25, 0.5]}  # fmt: skip
    folder.record(history, CONFIG, best_epoch=2)

    class Loop:
        epoch, best_epoch, stopped_early = 2, 2, False

    shared = folder.loop_summary(Loop(), history, n_train=6, n_val=6)
    assert shared["train_seconds"] == 0.75 and shared["epochs"] == 2 and shared["seconds"] >= 0
    summary = folder.finish({"dataset": "tiny", **shared})
    for name in ("run.json", "history.json", "config.json", "loss.png", "accuracy.png"):
        assert (folder.path / name).is_file(), name
    assert json.loads((folder.path / "summary.json").read_text()) == summary
    assert json.loads((folder.path / "history.json").read_text()) == history
    assert not (folder.path / "checkpoint.npz").exists()
    assert not list(folder.path.glob("*.tmp")) and not list(folder.path.glob(".*.tmp"))


def test_the_best_epoch_follows_its_monitor_and_stops_at_patience():
    val_loss, val_acc = [1.0, 0.8, 0.9, 0.95], [0.5, 0.4, 0.6, 0.55]
    by_loss, by_acc = BestEpoch("val_loss", 2), BestEpoch("val_acc", 2)
    for epoch, (loss, acc) in enumerate(zip(val_loss, val_acc, strict=True), 1):
        by_loss.update(epoch, loss, acc, lambda epoch=epoch: epoch)
        by_acc.update(epoch, loss, acc, lambda epoch=epoch: epoch)
    assert (by_loss.best_epoch, by_loss.kept, by_loss.stopped_early) == (2, 2, True)
    assert (by_acc.best_epoch, by_acc.kept, by_acc.stopped_early) == (3, 3, False)
    last = BestEpoch("val_acc", None, keep_last=True)
    assert all(last.update(e, 1.0, 0.1, lambda e=e: e) for e in (1, 2)) and last.kept == 2
    restored = BestEpoch("val_loss", 2)
    restored.load(json.loads(json.dumps(by_loss.state())))
    assert restored.state() == by_loss.state()
    with pytest.raises(ValueError, match="monitor"):
        BestEpoch("loss", None)


def test_each_kind_of_training_documents_its_monitor_default():
    from ferlab.nn.settings import SolverSettings
    from ferlab.settings import CNNSolverSettings, FCSolverSettings

    assert DEFAULT_MONITOR == {"fully_connected": "val_loss", "cnn": "val_acc"}
    assert SolverSettings.monitor == FCSolverSettings().monitor == "val_loss"
    assert CNNSolverSettings().monitor == "val_acc"


def test_a_history_from_before_a_key_was_recorded_holds_nan_for_it():
    restored = restored_history({"train_loss": [1.0, 2.0]}, ("train_loss", "train_l2"))
    assert restored["train_loss"] == [1.0, 2.0]
    assert len(restored["train_l2"]) == 2 and all(math.isnan(v) for v in restored["train_l2"])


def test_a_run_started_before_a_key_existed_resumes_when_the_key_keeps_its_default(tmp_path):
    def complete(config):
        return {**config, "solver": {"monitor": "val_acc", **config["solver"]}}

    first = started(tmp_path)  # its run.json has no solver.monitor
    now = complete(CONFIG)
    RunFolder(tmp_path / "a").start(now, tiny_splits(), resume=first.checkpoint, complete=complete)
    changed = {**now, "solver": {**now["solver"], "monitor": "val_loss"}}
    with pytest.raises(ConfigError, match="solver.monitor differ"):
        RunFolder(tmp_path / "b").start(
            changed, tiny_splits(), resume=first.checkpoint, complete=complete
        )
    with pytest.raises(ConfigError, match="solver.monitor differ"):
        RunFolder(tmp_path / "c").start(now, tiny_splits(), resume=first.checkpoint)
