import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from ferlab.data import load_cifar10
from ferlab.data.cifar10 import CLASS_NAMES
from ferlab.errors import DataError

PER_BATCH = 4


def _batch(seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (PER_BATCH, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, PER_BATCH)
    data = images.transpose(0, 3, 1, 2).reshape(PER_BATCH, -1)
    return images, labels, {b"batch_label": b"x", b"labels": labels.tolist(), b"data": data}


def write_pickle_batches(folder):
    folder.mkdir(parents=True)
    expected = []
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        images, labels, payload = _batch(i)
        (folder / name).write_bytes(pickle.dumps(payload))
        expected.append((images, labels))
    (folder / "batches.meta").write_bytes(
        pickle.dumps({b"label_names": [c.encode() for c in CLASS_NAMES]})
    )
    return expected


def write_class_folders(root, size=(32, 32)):
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("test", 2)):
        for cls in ("cat", "ship"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")


def make_tar(source, target):
    with tarfile.open(target, "w:gz") as archive:
        archive.add(source, arcname=source.name)
    return target


@pytest.mark.parametrize("as_tar", [False, True])
def test_pickle_batches_folder_and_tar(tmp_path, as_tar):
    expected = write_pickle_batches(tmp_path / "cifar-10-batches-py")
    path = tmp_path / "cifar-10-batches-py"
    if as_tar:
        path = make_tar(path, tmp_path / "cifar-10-python.tar.gz")
    data = load_cifar10(path)
    assert data.images.shape == (6 * PER_BATCH, 32, 32, 3) and data.images.dtype == np.uint8
    np.testing.assert_array_equal(data.images[:PER_BATCH], expected[0][0])
    np.testing.assert_array_equal(data.labels[-PER_BATCH:], expected[5][1])
    assert (data.splits == "train").sum() == 5 * PER_BATCH
    assert (data.splits == "test").sum() == PER_BATCH
    assert data.class_names == CLASS_NAMES


@pytest.mark.parametrize("as_tar", [False, True])
def test_class_folder_images_folder_and_tar(tmp_path, as_tar):
    root = tmp_path / "cifar-10-images"
    write_class_folders(root)
    path = make_tar(root, tmp_path / "images.tar.gz") if as_tar else root
    data = load_cifar10(path)
    assert data.images.shape == (10, 32, 32, 3)
    assert sorted(set(data.labels.tolist())) == [
        CLASS_NAMES.index("cat"),
        CLASS_NAMES.index("ship"),
    ]
    assert (data.splits == "train").sum() == 6
    first = np.asarray(Image.open(root / "train" / "cat" / "0000.png"))
    np.testing.assert_array_equal(data.split("train").images[0], first)


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_cifar10(tmp_path / "nowhere")


def test_corrupt_batch_is_a_clear_error(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_pickle_batches(folder)
    (folder / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="data_batch_3"):
        load_cifar10(folder)


def test_batch_with_foreign_objects_is_refused_without_running(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_pickle_batches(folder)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": []}))
    with pytest.raises(DataError, match="refused"):
        load_cifar10(folder)
    assert not marker.exists()


def test_image_of_wrong_size_is_skipped_or_strict_error(tmp_path):
    root = tmp_path / "imgs"
    write_class_folders(root)
    Image.new("RGB", (31, 32)).save(root / "train" / "cat" / "bad.png")
    with pytest.warns(UserWarning, match=r"skipped 1 bad.*bad.png.*31x32"):
        data = load_cifar10(root, use_cache=False)
    assert len(data) == 10
    with pytest.raises(DataError, match="bad.png"):
        load_cifar10(root, strict=True, use_cache=False)


def test_truncated_archive_is_a_clear_error(tmp_path):
    root = tmp_path / "imgs"
    write_class_folders(root)
    archive = make_tar(root, tmp_path / "x.tar.gz")
    payload = archive.read_bytes()
    archive.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_cifar10(archive)


def test_decoded_images_are_cached(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    write_class_folders(root)
    first = load_cifar10(root)
    import ferlab.data.cifar10 as cifar

    monkeypatch.setattr(cifar, "read_class_folders", lambda *a, **k: pytest.fail("cache missed"))
    np.testing.assert_array_equal(load_cifar10(root).images, first.images)
