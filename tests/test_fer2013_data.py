import gzip
import os
import tarfile
import warnings

import numpy as np
import pytest
from PIL import Image

from ferlab.cli import main
from ferlab.data import load_fer2013
from ferlab.data.fer2013 import CLASS_NAMES
from ferlab.errors import DataError

RNG = np.random.default_rng(0)


def faces(n):
    return RNG.integers(0, 256, (n, 48, 48), dtype=np.uint8)


def csv_text(images, labels, usages):
    rows = ["emotion,pixels,Usage"]
    for image, label, usage in zip(images, labels, usages, strict=True):
        rows.append(f"{label},{' '.join(map(str, image.ravel()))},{usage}")
    return "\n".join(rows) + "\n"


def write_coursework(root, images, labels, extra_rows=()):
    (root / "Train").mkdir(parents=True)
    (root / "Test").mkdir()
    rows = ["img,emotion"]
    for i, (image, label) in enumerate(zip(images, labels, strict=True), start=1):
        name = f"{'Train' if i % 2 else 'Test'}/{i}.png"
        Image.fromarray(image).save(root / name)
        rows.append(f"{name},{label}")
    (root / "labels_public.txt").write_text("\n".join([*rows, *extra_rows]) + "\n")


# (folder, class folder, file name, expected label, expected split)
CLASS_FOLDER_FILES = [
    ("train", "happy", "Training_1.png", 3, "training"),
    ("train", "angry", "Training_2.png", 0, "training"),
    ("test", "neutral", "PublicTest_3.png", 6, "public_test"),
    ("test", "surprise", "PrivateTest_4.png", 5, "private_test"),
    ("test", "disgust", "5.png", 1, "public_test"),
]


def write_class_folders(root):
    images = faces(len(CLASS_FOLDER_FILES))
    for image, (split, cls, name, _, _) in zip(images, CLASS_FOLDER_FILES, strict=True):
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / split / cls / name)
    return images


def by_name(data):
    order = np.argsort([n.rsplit("/", 1)[-1] for n in data.names])
    return data.subset(order)


def test_kaggle_csv_and_gz(tmp_path):
    images, labels = faces(4), [0, 6, 3, 1]
    usages = ["Training", "PublicTest", "PrivateTest", "Training"]
    text = csv_text(images, labels, usages)
    (tmp_path / "fer2013.csv").write_text(text)
    with gzip.open(tmp_path / "fer2013.csv.gz", "wt") as handle:
        handle.write(text)
    for name in ("fer2013.csv", "fer2013.csv.gz"):
        data = load_fer2013(tmp_path / name, use_cache=False)
        assert data.images.dtype == np.uint8 and data.images.shape == (4, 48, 48)
        np.testing.assert_array_equal(data.images, images)
        assert data.labels.tolist() == labels
        assert data.splits.tolist() == ["training", "public_test", "private_test", "training"]
        assert data.class_names == CLASS_NAMES


def test_folder_holding_the_csv_is_read(tmp_path):
    (tmp_path / "fer2013.csv").write_text(csv_text(faces(1), [2], ["Training"]))
    assert load_fer2013(tmp_path, use_cache=False).labels.tolist() == [2]


def test_coursework_layout(tmp_path):
    images, labels = faces(4), [4, 5, 0, 6]
    write_coursework(tmp_path / "fer", images, labels)
    data = load_fer2013(tmp_path / "fer", use_cache=False)
    assert data.names.tolist() == ["Train/1.png", "Test/2.png", "Train/3.png", "Test/4.png"]
    np.testing.assert_array_equal(data.images, images)
    assert data.labels.tolist() == labels
    assert data.splits.tolist() == ["training", "public_test", "training", "public_test"]


@pytest.mark.parametrize("as_tar", [False, True])
def test_class_folders_with_usage_prefixes(tmp_path, as_tar):
    images = write_class_folders(tmp_path / "fer2013")
    path = tmp_path / "fer2013"
    if as_tar:
        path = tmp_path / "fer2013-images.tar.gz"
        with tarfile.open(path, "w:gz") as archive:
            archive.add(tmp_path / "fer2013", arcname="fer2013")
    data = by_name(load_fer2013(path, use_cache=False))
    expected = sorted(zip(CLASS_FOLDER_FILES, images, strict=True), key=lambda item: item[0][2])
    assert [n.rsplit("/", 1)[-1] for n in data.names] == [e[0][2] for e in expected]
    assert data.labels.tolist() == [e[0][3] for e in expected]
    assert data.splits.tolist() == [e[0][4] for e in expected]
    np.testing.assert_array_equal(data.images, np.stack([e[1] for e in expected]))


def test_jpeg_of_another_mode_is_read_as_grayscale(tmp_path):
    folder = tmp_path / "train" / "sad"
    folder.mkdir(parents=True)
    Image.new("RGB", (48, 48), (200, 10, 10)).save(folder / "Training_9.jpg")
    data = load_fer2013(tmp_path, use_cache=False)
    assert data.images.shape == (1, 48, 48) and data.labels.tolist() == [4]


def test_cache_hit_and_miss_after_the_source_changes(tmp_path, monkeypatch):
    import ferlab.data.fer2013 as fer

    source = tmp_path / "fer2013.csv"
    source.write_text(csv_text(faces(2), [0, 1], ["Training", "PublicTest"]))
    first = load_fer2013(source)
    cache = os.environ["FERLAB_CACHE_DIR"]
    assert [n for n in os.listdir(cache) if n.startswith("fer2013-csv-")]
    calls = []
    real = fer._load_csv
    monkeypatch.setattr(fer, "_load_csv", lambda *a: calls.append(a) or real(*a))
    hit = load_fer2013(source)
    assert calls == []
    np.testing.assert_array_equal(hit.images, first.images)
    assert hit.splits.tolist() == first.splits.tolist()

    source.write_text(csv_text(faces(3), [2, 3, 4], ["Training"] * 3))
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = load_fer2013(source)
    assert len(calls) == 1 and changed.labels.tolist() == [2, 3, 4]

    load_fer2013(source, use_cache=False)
    assert len(calls) == 2


def test_cache_directory_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FERLAB_CACHE_DIR", str(tmp_path / "my-cache"))
    (tmp_path / "fer2013.csv").write_text(csv_text(faces(1), [0], ["Training"]))
    load_fer2013(tmp_path / "fer2013.csv")
    assert len(list((tmp_path / "my-cache").glob("fer2013-csv-*.npz"))) == 1


BAD_CSV_ROWS = [
    ("0,1 2 3,Training", "line 3: 3 pixels, expected 2304"),
    ("7,{p},Training", "line 4: label '7' is not one of 0..6"),
    ("x,{p},Training", "line 5: label 'x' is not one of 0..6"),
    ("1,{p},Somewhere", "line 6: unknown Usage 'Somewhere'"),
]


def write_bad_csv(path):
    good = csv_text(faces(1), [3], ["Training"])
    pixels = " ".join(["7"] * 2304)
    bad = [row.format(p=pixels) for row, _ in BAD_CSV_ROWS]
    path.write_text(good + "\n".join(bad) + "\n")


def test_bad_csv_rows_are_skipped_with_one_warning(tmp_path):
    write_bad_csv(tmp_path / "fer2013.csv")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_fer2013(tmp_path / "fer2013.csv", use_cache=False)
    assert len(data) == 1 and data.labels.tolist() == [3]
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "skipped 4 bad item(s)" in message
    for _, expected in BAD_CSV_ROWS:
        assert expected in message


def test_bad_csv_row_is_an_error_when_strict(tmp_path):
    write_bad_csv(tmp_path / "fer2013.csv")
    with pytest.raises(DataError, match="line 3: 3 pixels, expected 2304"):
        load_fer2013(tmp_path / "fer2013.csv", strict=True, use_cache=False)


def test_bad_coursework_rows_and_images(tmp_path):
    root = tmp_path / "fer"
    write_coursework(root, faces(2), [1, 2], extra_rows=["Train/9.png,3", "Train/1.png,8"])
    (root / "Test" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with open(root / "labels_public.txt", "a") as handle:
        handle.write("Test/broken.png,4\n")
    with pytest.warns(UserWarning) as caught:
        data = load_fer2013(root, use_cache=False)
    assert data.labels.tolist() == [1, 2]
    message = str(caught[0].message)
    assert "skipped 3 bad item(s)" in message
    assert "line 4: Train/9.png: no such file" in message
    assert "line 5: label '8' is not one of 0..6" in message
    assert "Test/broken.png: not an image, or an unsupported format" in message
    with pytest.raises(DataError, match="Train/9.png: no such file"):
        load_fer2013(root, strict=True, use_cache=False)


def test_truncated_image_and_unknown_class_folder(tmp_path):
    write_class_folders(tmp_path)
    good = (tmp_path / "train" / "happy" / "Training_1.png").read_bytes()
    (tmp_path / "train" / "happy" / "Training_7.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "train" / "contempt").mkdir()
    Image.fromarray(faces(1)[0]).save(tmp_path / "train" / "contempt" / "Training_8.png")
    with pytest.warns(UserWarning) as caught:
        data = load_fer2013(tmp_path, use_cache=False)
    assert len(data) == len(CLASS_FOLDER_FILES)
    message = str(caught[0].message)
    assert "skipped 2 bad item(s)" in message
    assert "Training_7.png: unreadable or truncated image" in message
    assert "unknown class folder 'contempt'" in message
    with pytest.raises(DataError, match="contempt|Training_7"):
        load_fer2013(tmp_path, strict=True, use_cache=False)


def test_wrong_image_size_is_bad_input(tmp_path):
    write_class_folders(tmp_path)
    Image.new("L", (40, 48)).save(tmp_path / "train" / "happy" / "Training_6.png")
    with pytest.raises(DataError, match="Training_6.png: image is 40x48, expected 48x48"):
        load_fer2013(tmp_path, strict=True, use_cache=False)


def test_missing_path_and_foreign_file_are_clear_errors(tmp_path, capsys):
    with pytest.raises(DataError, match="no such file or folder"):
        load_fer2013(tmp_path / "nope.csv")
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(DataError, match="expected fer2013.csv"):
        load_fer2013(tmp_path / "weights.bin")
    (tmp_path / "fer2013.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="'emotion' and 'pixels'"):
        load_fer2013(tmp_path / "fer2013.csv")


def test_cli_reports_a_missing_data_path_in_one_line(tmp_path, capsys):
    from ferlab.nn import FullyConnectedNet

    model = FullyConnectedNet(2304, [4], 7, seed=0)
    model.class_names, model.input_shape = list(CLASS_NAMES), (48, 48)
    model.training_info = {"data": {"dataset": "fer2013"}, "seed": 0}
    model.save(tmp_path / "model.npz")
    code = main(["evaluate", "--model", str(tmp_path / "model.npz"), "--split", "public",
                 "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "eval")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no such file or folder" in err[0]
