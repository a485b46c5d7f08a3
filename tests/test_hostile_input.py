"""Hostile and careless input, reproduced from real files built here: nothing silently wrong,
nothing lost, nothing hangs, and one clear line instead of a traceback."""

import gzip
import io
import os
import tarfile
import tracemalloc
import warnings

import numpy as np
import pytest
from PIL import Image

from ferlab.data import load_fer2013
from ferlab.data.fer2013 import CLASS_NAMES
from ferlab.data.split import held_out_part, split_images
from ferlab.errors import DataError

# -- data sets ------------------------------------------------------------------------------


def face(value: int) -> Image.Image:
    return Image.fromarray(np.full((48, 48), value, dtype=np.uint8))


def write_faces(root, per_class=3):
    """fer2013/{train,test}/<emotion>/<Usage>_<n>.png, each class a different grey."""
    for folder, prefixes in (("train", ["Training"]), ("test", ["PublicTest", "PrivateTest"])):
        for c, name in enumerate(CLASS_NAMES):
            target = root / "fer2013" / folder / name
            target.mkdir(parents=True, exist_ok=True)
            for prefix in prefixes:
                for i in range(per_class):
                    face(30 * c + i).save(target / f"{prefix}_{c}{i}.png")
    return root


def quiet_load(path, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_fer2013(path, **kwargs)
    return data, " ".join(str(w.message) for w in caught)


def test_moving_a_file_between_class_folders_is_not_served_from_the_cache(tmp_path):
    root = write_faces(tmp_path / "data")
    first, _ = quiet_load(root)
    moved = root / "fer2013" / "train" / "happy" / "Training_30.png"
    target = root / "fer2013" / "train" / "sad" / "Training_30.png"
    stat = moved.stat()
    os.rename(moved, target)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime
    second, _ = quiet_load(root)
    index = list(second.names).index("fer2013/train/sad/Training_30.png")
    assert second.labels[index] == CLASS_NAMES.index("sad")
    assert (first.labels == CLASS_NAMES.index("sad")).sum() + 1 == (
        second.labels == CLASS_NAMES.index("sad")
    ).sum()


def test_train_limit_is_a_stratified_seeded_subset():
    from ferlab.data.digits import load_digits

    data = load_digits()
    config = {"dataset": "digits", "val_size": 0.1, "train_limit": 50}
    splits = split_images(data, config, seed=0)
    counts = np.bincount(splits.train.labels, minlength=10)
    assert len(splits.train) == 50 and counts.min() >= 4 and counts.max() <= 6
    again = split_images(data, config, seed=0)
    assert np.array_equal(splits.train.images, again.train.images)
    other = split_images(data, config, seed=1)
    assert not np.array_equal(splits.train.images, other.train.images)


def test_a_split_seed_holds_out_the_same_samples_whatever_the_run_seed():
    from ferlab.data.digits import load_digits

    data = load_digits()
    shared = {"dataset": "digits", "val_size": 0.1, "split_seed": 5}
    first, second = split_images(data, shared, seed=0), split_images(data, shared, seed=1)
    plain = {"dataset": "digits", "val_size": 0.1}
    assert np.array_equal(first.val.images, second.val.images)
    assert np.array_equal(first.val.images, split_images(data, plain, seed=5).val.images)
    assert not np.array_equal(first.val.images, split_images(data, plain, seed=0).val.images)


def test_held_out_parts_compare_old_and_new_model_records():
    data = {"dataset": "fer2013", "val_size": 0.1}
    old_file = {"data": data, "seed": 3}  # written before split_seed existed
    unset = {"data": {**data, "split_seed": None}, "seed": 3}
    shared = {"data": {**data, "split_seed": 3}, "seed": 9}
    assert held_out_part(old_file) == held_out_part(unset) == held_out_part(shared)
    assert held_out_part(old_file) != held_out_part({"data": data, "seed": 4})
    assert held_out_part(old_file) != held_out_part({"data": {**data, "val_size": 0.2}, "seed": 3})


def test_a_train_limit_holds_out_the_same_samples_as_the_whole_training_part():
    from ferlab.data.digits import load_digits

    data = load_digits()
    whole = {"dataset": "digits", "val_size": 0.1, "split_seed": 2, "train_limit": None}
    limited = {**whole, "train_limit": 300}
    first, second = split_images(data, whole, seed=0), split_images(data, limited, seed=0)
    assert len(second.train) == 300 < len(first.train)
    assert np.array_equal(first.val.images, second.val.images)
    assert held_out_part({"data": whole, "seed": 0}) == held_out_part({"data": limited, "seed": 0})


def test_archive_members_outside_the_layout_are_never_read(tmp_path):
    root = write_faces(tmp_path / "data")
    archive = tmp_path / "faces.tar.gz"
    junk = b"\0" * (200 * 1024 * 1024)  # compresses to a few hundred kilobytes
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / "fer2013", arcname="fer2013")
        info = tarfile.TarInfo("fer2013/notes/huge.bin")
        info.size = len(junk)
        tar.addfile(info, io.BytesIO(junk))
        big = tarfile.TarInfo("fer2013/train/happy/Training_huge.png")
        big.size = 80 * 1024 * 1024
        tar.addfile(big, io.BytesIO(b"\0" * big.size))
    del junk
    tracemalloc.start()
    data, warned = quiet_load(archive, use_cache=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(data) == 7 * 9
    assert peak < 40 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB"
    assert "Training_huge.png: 83,886,080 bytes, more than the" in warned


def test_special_files_in_a_data_folder_are_skipped_and_named(tmp_path):
    root = write_faces(tmp_path / "data")
    happy = root / "fer2013" / "train" / "happy"
    os.mkfifo(happy / "Training_fifo.jpg")  # reading it would block forever
    os.symlink("/dev/zero", happy / "Training_zero.png")  # reading it would never end
    os.symlink(happy / "missing.png", happy / "Training_dangling.png")
    face(7).save(tmp_path / "outside.png")
    os.symlink(tmp_path / "outside.png", happy / "Training_outside.png")
    os.symlink(happy / "Training_30.png", happy / "Training_inside.png")  # inside: followed
    data, warned = quiet_load(root, use_cache=False)
    assert len(data) == 7 * 9 + 1
    assert "Training_fifo.jpg: not a regular file" in warned
    assert "Training_zero.png: a symbolic link leading outside the data folder" in warned
    assert "Training_dangling.png: a broken symbolic link" in warned
    assert "Training_outside.png: a symbolic link leading outside the data folder" in warned
    with pytest.raises(DataError, match=r"Training_(dangling|fifo|outside|zero)\.\w+: "):
        load_fer2013(root, strict=True, use_cache=False)


def test_a_decompression_bomb_in_a_data_folder_is_skipped_before_decoding(tmp_path):
    root = write_faces(tmp_path / "data")
    Image.new("1", (20000, 20000)).save(root / "fer2013" / "train" / "sad" / "Training_bomb.png")
    data, warned = quiet_load(root, use_cache=False)
    assert len(data) == 7 * 9 and "Training_bomb.png: image too large" in warned


def csv_rows(rows):
    header = "emotion,pixels,Usage\n"
    return header + "".join(f"{label},{pixels},{usage}\n" for label, pixels, usage in rows)


GOOD = [(3, " ".join(["7"] * 2304), "Training"), (5, " ".join(["9"] * 2304), "PublicTest")]


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "cp1252"])
def test_csv_files_as_spreadsheets_save_them(tmp_path, encoding):
    path = tmp_path / "fer2013.csv"
    path.write_bytes(csv_rows(GOOD).encode(encoding))
    data, _ = quiet_load(path, use_cache=False)
    assert data.labels.tolist() == [3, 5] and data.images[1, 0, 0] == 9


def test_bad_numbers_and_corrupt_streams_are_named_not_tracebacks(tmp_path):
    rows = [*GOOD, (4, " ".join(["99999999999999999999999"] * 2304), "Training")]
    rows.append((2, " ".join(["300"] * 2304), "Training"))
    rows.append(("1e9", " ".join(["1"] * 2304), "Training"))
    path = tmp_path / "fer2013.csv"
    path.write_text(csv_rows(rows))
    data, warned = quiet_load(path, use_cache=False)
    assert len(data) == 2
    assert "line 4: pixels are not whole numbers in 0..255" in warned
    assert "line 5: pixel values outside 0..255" in warned
    assert "line 6: label '1e9' is not one of 0..6" in warned
    packed = gzip.compress(csv_rows(GOOD * 200).encode())
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(packed[:40] + bytes(b ^ 0x5A for b in packed[40:400]) + packed[400:])
    with pytest.raises(DataError, match="broken.csv.gz: unreadable or truncated CSV"):
        load_fer2013(broken, use_cache=False)


# -- model files ----------------------------------------------------------------------------


def small_model(tmp_path):
    from ferlab.nn import FullyConnectedNet, Preprocessor

    model = FullyConnectedNet(48 * 48, [8], 7, seed=0)
    model.preprocessor = Preprocessor("standardize").fit(
        np.random.default_rng(0).integers(0, 256, (20, 48, 48), dtype=np.uint8)
    )
    model.class_names, model.input_shape = list(CLASS_NAMES), (48, 48)
    return model.save(tmp_path / "m.npz")


def tamper(path, out, *, meta_change=None, arrays_change=None):
    from ferlab.common.arrays import read_npz, write_npz

    meta, arrays = read_npz(path)
    if meta_change:
        meta_change(meta)
    if arrays_change:
        arrays_change(arrays)
    return write_npz(out, meta, arrays)


def test_tampered_model_metadata_is_checked_before_allocating(tmp_path):
    from ferlab.errors import ModelFileError
    from ferlab.inference.models import load_model

    path = small_model(tmp_path)

    def giant(meta):
        meta["architecture"]["hidden_dims"] = [12000, 12000]

    bad = tamper(path, tmp_path / "giant.npz", meta_change=giant)
    assert bad.stat().st_size < 100_000
    tracemalloc.start()
    with pytest.raises(ModelFileError, match="parameter W1 has shape .* the architecture says"):
        load_model(bad)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB"

    def nan_weight(arrays):
        arrays["param/W1"][0, 0] = np.nan

    with pytest.raises(ModelFileError, match="non-finite"):
        load_model(tamper(path, tmp_path / "nan.npz", arrays_change=nan_weight))

    def zero_scale(meta):
        meta["preprocessing"]["scale"] = 0.0

    with pytest.raises(ModelFileError, match="scale must be a positive number"):
        load_model(tamper(path, tmp_path / "zero.npz", meta_change=zero_scale))

    def wrong_names(meta):
        meta["class_names"] = ["a", "b"]

    with pytest.raises(ModelFileError, match="class_names must be 7 names"):
        load_model(tamper(path, tmp_path / "names.npz", meta_change=wrong_names))


def test_a_compressed_array_bomb_is_refused_unread(tmp_path, monkeypatch):
    import zipfile

    import ferlab.common.arrays
    from ferlab.errors import ModelFileError
    from ferlab.inference.models import load_model

    path = small_model(tmp_path)
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path) as good, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out:
        for info in good.infolist():
            out.writestr(info.filename, good.read(info))
        out.writestr("extra.npy", b"\0" * (32 * 1024 * 1024))
    assert bomb.stat().st_size < 1_000_000
    monkeypatch.setattr(ferlab.common.arrays, "MAX_ARRAY_BYTES", 16 * 1024 * 1024)
    with pytest.raises(ModelFileError, match="declares .* bytes of arrays, more than"):
        load_model(bomb)


def test_tampered_cnn_architecture_is_refused_before_building(tmp_path):
    torch = pytest.importorskip("torch")
    from ferlab.deep import build_cnn, save_cnn
    from ferlab.deep.io import model_meta
    from ferlab.deep.model import architecture_from_config
    from ferlab.errors import ModelFileError
    from ferlab.inference.models import load_model
    from ferlab.settings import CNNModelSettings

    tiny = CNNModelSettings(widths=[4, 8], convs=[1, 1], dropout=0.0, head_dropout=0.0)
    arch = architecture_from_config(tiny, 3)
    module = build_cnn(arch)
    meta = model_meta(arch, ["a", "b", "c"], 100.0, 50.0, 40)
    meta["architecture"] = {**arch, "widths": [100_000, 100_000]}
    save_cnn(module, meta, tmp_path / "giant.safetensors")
    save_cnn(
        module, model_meta(arch, ["a", "b", "c"], 100.0, 50.0, 40), tmp_path / "ok.safetensors"
    )
    load_model(tmp_path / "ok.safetensors")  # first use imports modules: not counted below
    tracemalloc.start()
    with pytest.raises(ModelFileError, match="do not match the architecture"):
        load_model(tmp_path / "giant.safetensors")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 50 * 1024 * 1024
    with torch.no_grad():
        module.head.weight[0, 0] = float("nan")
    save_cnn(
        module, model_meta(arch, ["a", "b", "c"], 100.0, 50.0, 40), tmp_path / "nan.safetensors"
    )
    with pytest.raises(ModelFileError, match="non-finite values in head.weight"):
        load_model(tmp_path / "nan.safetensors")
    save_cnn(
        build_cnn(arch),
        model_meta(arch, ["a", "b", "c"], 100.0, 0.0, 40),
        tmp_path / "z.safetensors",
    )
    with pytest.raises(ModelFileError, match="std must be a positive number"):
        load_model(tmp_path / "z.safetensors")


def test_model_files_get_the_same_permissions_as_other_outputs(tmp_path):
    path = small_model(tmp_path)
    (tmp_path / "other.txt").write_text("x")
    assert path.stat().st_mode & 0o777 == (tmp_path / "other.txt").stat().st_mode & 0o777


# -- searches and runs ----------------------------------------------------------------------


def _search_helpers():
    from test_search import DIGITS_SPACE, POSTGRES, _postgres_ready, fake_trial, tiny_space

    return DIGITS_SPACE, POSTGRES, _postgres_ready, fake_trial, tiny_space


def test_a_torn_last_journal_line_is_set_aside_and_the_study_goes_on(tmp_path):
    from ferlab.search.cluster import open_executor
    from ferlab.search.report import write_report
    from ferlab.search.space import parse_space
    from ferlab.search.study import open_study, search

    _, _, _, fake_trial, tiny_space = _search_helpers()
    space, journal = parse_space(tiny_space()), tmp_path / "s.journal"
    with open_executor(0) as executor:
        search("random", space, "s", str(journal), 3, executor, trial_fn=fake_trial, progress=False)
    with open(journal, "ab") as handle:  # a writer killed mid-record
        handle.write(b'{"op_code": 6, "worker_id": "x", "trial_id": 2, "sta')
    torn = pytest.warns(UserWarning, match="set aside a half-written last record")
    with torn, open_executor(0) as executor:
        study = search(
            "random", space, "s", str(journal), 5, executor, trial_fn=fake_trial, progress=False
        )
    assert len([t for t in study.trials if t.state.is_finished()]) == 5
    assert [p.name for p in tmp_path.glob("s.journal.torn-*")]
    write_report(open_study("s", str(journal)), tmp_path / "report")
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[3] = b"garbage that is not JSON\n"
    journal.write_bytes(b"".join(lines))
    with pytest.raises(Exception, match="line 4 is not a journal record"):
        open_study("s", str(journal))


def test_a_search_whose_trials_all_fail_stops_with_the_last_error(tmp_path):
    from ferlab.search.cluster import open_executor
    from ferlab.search.runner import MAX_FAILURES_IN_A_ROW, SearchFailed
    from ferlab.search.space import parse_space
    from ferlab.search.study import open_study, search

    _, _, _, _, tiny_space = _search_helpers()

    def always_fails(config, report):
        raise ValueError("the loss became nan in epoch 1")

    space = parse_space(tiny_space())
    stops = pytest.raises(SearchFailed, match="10 trials in a row failed; the last one: .*nan")
    with stops, open_executor(0) as executor:
        search("random", space, "f", str(tmp_path / "f.journal"), 50, executor,
               trial_fn=always_fails, progress=False)  # fmt: skip
    study = open_study("f", str(tmp_path / "f.journal"))
    assert len(study.trials) < 2 * MAX_FAILURES_IN_A_ROW


def _start_driver(argv, cwd):
    import subprocess
    import sys

    ferlab = str(__import__("pathlib").Path(sys.executable).parent / "ferlab")
    return subprocess.Popen(
        [ferlab, *argv], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip


def _finished(storage, name):
    import optuna

    from ferlab.search.storage import open_storage

    try:
        study = optuna.load_study(study_name=name, storage=open_storage(storage))
    except (KeyError, Exception):
        return 0
    return sum(t.state.is_finished() and t.state.name != "FAIL" for t in study.trials)


def _wait_for(predicate, seconds=90):
    import time

    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert predicate(), "timed out"


def test_a_second_driver_on_a_journal_study_is_refused_and_a_killed_one_leaves_no_lock(
    tmp_path, capsys
):
    import signal

    from ferlab.cli import main

    digits_space = _search_helpers()[0]
    argv = ["search", "random", str(digits_space), "--trials", "60", "--workers", "0",
            "--study", "two", "--study-dir", str(tmp_path), "--quiet"]  # fmt: skip
    journal = str(tmp_path / "two" / "study.journal")
    driver = _start_driver(argv, tmp_path)
    try:
        _wait_for(lambda: _finished(journal, "two") >= 1)
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "another search driver (pid " in err and err.count("\n") == 1
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    resumed = ["search", "resume", "--study", "two", "--study-dir", str(tmp_path)]
    assert main([*resumed, "--workers", "0", "--quiet"]) == 0
    assert _finished(journal, "two") == 60


def test_postgres_resume_right_after_a_killed_driver_finishes_exactly_the_trials(
    tmp_path, monkeypatch
):
    import signal
    import uuid

    import optuna

    import ferlab.search.storage as storage_module
    from ferlab.cli import main

    digits_space, postgres, ready, _, _ = _search_helpers()
    if ready():
        pytest.skip(ready())
    name = f"ferlab-kill-{uuid.uuid4().hex[:8]}"
    argv = ["search", "random", str(digits_space), "--trials", "8", "--workers", "0",
            "--study", name, "--storage", postgres, "--quiet"]  # fmt: skip
    driver = _start_driver(argv, tmp_path)
    try:
        _wait_for(lambda: _finished(postgres, name) >= 2)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    try:
        # Dead trials are those without a heartbeat for GRACE_S: shorten it for the test, yet
        # keep it longer than the resumed trials take, so that the dead one still looks alive
        # when the resume would otherwise have finished.
        monkeypatch.setattr(storage_module, "GRACE_S", 8)
        monkeypatch.setattr(storage_module, "HEARTBEAT_S", 1)
        assert main(["search", "resume", "--study", name, "--storage", postgres,
                     "--workers", "0", "--quiet"]) == 0  # fmt: skip
        assert _finished(postgres, name) == 8
    finally:
        optuna.delete_study(study_name=name, storage=storage_module.open_storage(postgres))


def test_resume_with_another_config_or_other_data_is_refused(tmp_path, capsys):
    import signal
    import subprocess
    import time

    from ferlab.cli import main

    data = write_faces(tmp_path / "data", per_class=4)
    config = tmp_path / "fer.toml"
    config.write_text(
        '[data]\ndataset = "fer2013"\nval_size = 7\n[model]\nhidden_dims = [64]\n'
        "[solver]\nepochs = 100000\nbatch_size = 4\n"
    )
    run = tmp_path / "run"
    driver = _start_driver(["train", str(config), "--data", str(data), "--out", str(run)], tmp_path)
    try:
        _wait_for(lambda: (run / "checkpoint.npz").is_file())
        time.sleep(0.5)
    finally:
        driver.send_signal(signal.SIGINT)  # Ctrl-C: the checkpoint is kept
        try:
            driver.wait(timeout=30)
        except subprocess.TimeoutExpired:
            driver.kill()
    checkpoint = str(run / "checkpoint.npz")
    base = ["train", str(config), "--out", str(run), "--resume", checkpoint, "--quiet"]
    assert main([*base, "--data", str(data), "--set", "seed=1"]) == 2
    err = capsys.readouterr().err
    assert "--resume with another config: seed differ" in err
    other = tmp_path / "other"
    __import__("shutil").copytree(data, other)
    face(200).save(other / "fer2013" / "train" / "angry" / "Training_00.png")
    assert main([*base, "--data", str(other), "--set", "solver.epochs=1"]) == 2
    assert "--resume with other data" in capsys.readouterr().err
    moved = tmp_path / "moved"
    __import__("shutil").copytree(data, moved)  # the same data elsewhere may continue
    epoch = json_epoch(checkpoint)
    assert main([*base, "--data", str(moved), "--set", f"solver.epochs={epoch + 1}"]) == 0


def json_epoch(checkpoint):
    from ferlab.common.arrays import read_npz

    meta, _ = read_npz(checkpoint)
    return int(meta["epoch"])


def test_a_disk_filling_up_during_training_is_one_line_and_leaves_complete_files(tmp_path):
    import json
    import resource
    import subprocess
    import sys

    ferlab = str(__import__("pathlib").Path(sys.executable).parent / "ferlab")
    run = tmp_path / "run"

    def small_files_only():  # writing beyond 40 KB fails with EFBIG, as a full disk would
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

    done = subprocess.run(
        [ferlab, "train", "digits_fc", "--out", str(run), "--quiet",
         "--set", "model.hidden_dims=[512]"],
        capture_output=True, text=True, preexec_fn=small_files_only, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("ferlab: error: ") and done.stderr.count("\n") == 1
    assert "File too large" in done.stderr and "Traceback" not in done.stderr
    json.loads((run / "run.json").read_text())  # written before the failure, complete
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))
    assert not (run / "checkpoint.npz").exists()  # never half a checkpoint


def test_an_unwritable_output_is_one_line(tmp_path, capsys):
    from ferlab.cli import main

    (tmp_path / "file.txt").write_text("x")
    argv = ["train", "digits_fc", "--out", str(tmp_path / "file.txt" / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot create the folder" in err and err.count("\n") == 1


# -- configs --------------------------------------------------------------------------------


def test_every_bad_config_value_through_ferlab_train_is_one_line_before_data_loads(
    tmp_path, capsys
):
    from ferlab.cli import main
    from ferlab.settings import TrainSettings
    from test_settings import CASES

    config = tmp_path / "c.toml"
    config.write_text('[data]\ndataset = "fer2013"\n')
    cases = [(override, parts) for schema, override, parts in CASES if schema is TrainSettings]
    assert len(cases) >= 20
    for override, parts in cases:
        argv = ["train", str(config), "--set", override, "--out", str(tmp_path / "run")]
        assert main([*argv, "--data", str(tmp_path / "absent.csv")]) == 2, override
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert all(part in err for part in parts), err
        assert not (tmp_path / "run").exists()
