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
from ferlab.data.split import split_images
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
