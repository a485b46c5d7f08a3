import csv
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from ferlab.cli import main
from ferlab.data.fer2013 import CLASS_NAMES
from ferlab.errors import DataError, ModelFileError
from ferlab.inference.compat import test_fer_model
from ferlab.inference.predict import predict_folder, read_images, target_format
from ferlab.nn import FullyConnectedNet, Preprocessor


@pytest.fixture
def model_path(tmp_path):
    rng = np.random.default_rng(0)
    model = FullyConnectedNet(48 * 48, [8], 7, seed=0)
    model.preprocessor = Preprocessor("standardize").fit(
        rng.integers(0, 256, (20, 48, 48), dtype=np.uint8)
    )
    model.class_names, model.input_shape = list(CLASS_NAMES), (48, 48)
    return model.save(tmp_path / "fer_model.npz")


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "images"
    folder.mkdir()
    # Written out of order; "10" sorts before "2" lexicographically.
    for name in ("b.png", "10.png", "2.jpg", "a.png"):
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(folder / name)
    return folder


def direct_predictions(model_path, folder, names):
    from ferlab.inference.models import load_model

    model = load_model(model_path)
    images = np.stack([np.asarray(Image.open(folder / n).convert("L")) for n in names])
    return model.predict_proba(images)


def test_predictions_are_in_lexicographic_file_order(model_path, folder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predictions = predict_folder(folder, model_path)
    names = ["10.png", "2.jpg", "a.png", "b.png"]
    assert [p.file for p in predictions] == names
    proba = direct_predictions(model_path, folder, names)
    assert [p.class_index for p in predictions] == proba.argmax(axis=1).tolist()
    assert [p.class_name for p in predictions] == [CLASS_NAMES[k] for k in proba.argmax(axis=1)]
    np.testing.assert_allclose([p.probability for p in predictions], proba.max(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(test_fer_model(folder, model_path), proba.argmax(axis=1))


def test_any_size_and_mode_is_resized_with_one_warning(model_path, folder):
    Image.new("RGB", (100, 80), (10, 200, 30)).save(folder / "c_big.png")
    Image.new("RGBA", (20, 20), (0, 0, 0, 0)).save(folder / "d_small.png")
    with pytest.warns(UserWarning) as caught:
        predictions = predict_folder(folder, model_path)
    assert len(caught) == 1 and "resized 2 image(s) to 48x48" in str(caught[0].message)
    assert [p.file for p in predictions][-2:] == ["c_big.png", "d_small.png"]
    with pytest.warns(UserWarning, match="resized 1 image"):
        images, _ = read_images([folder / "c_big.png"], (48, 48))
    assert images.shape == (1, 48, 48) and images.dtype == np.uint8


def test_non_image_files_are_skipped_with_a_warning(model_path, folder):
    (folder / "notes.txt").write_text("hello")
    (folder / "fake.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match=r"skipped 2 file\(s\).*fake.jpg.*notes.txt"):
        predictions = predict_folder(folder, model_path)
    assert len(predictions) == 4


def test_target_format_follows_the_model_input_shape():
    assert target_format((48, 48)) == ((48, 48), "L")
    assert target_format((32, 24, 3)) == ((24, 32), "RGB")
    with pytest.raises(ModelFileError):
        target_format(None)


def test_missing_folder_is_a_clear_error(model_path, tmp_path):
    with pytest.raises(DataError, match="no such image folder"):
        predict_folder(tmp_path / "nope", model_path)


def test_predict_command_on_crops_matches_the_report_interface(model_path, folder, capsys):
    args = ["predict", str(folder), "--model", str(model_path), "--detector", "none"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [f"{folder}/{n}" for n in ("10.png", "2.jpg", "a.png", "b.png")]
    assert [line.split()[0] for line in lines] == names
    # after "face 0 at (x,y WxH) score S"
    assert all(line.split()[8] in CLASS_NAMES for line in lines)
    assert main([*args, "--format", "csv"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert [r["file"] for r in rows] == names
    expected = test_fer_model(folder, model_path)
    assert [CLASS_NAMES.index(r["emotion"]) for r in rows] == expected.tolist()
    assert main(["predict", str(folder), "--model", str(folder / "none.npz")]) == 2


def test_module_script_prints_one_index_per_image(model_path, folder):
    # The report's default model name has no suffix; fer_model finds fer_model.npz.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ferlab.inference.compat",
            str(folder),
            str(model_path.with_suffix("")),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    printed = [int(line) for line in result.stdout.split()]
    assert printed == test_fer_model(folder, model_path).tolist()


def test_a_decompression_bomb_in_a_crop_folder_is_skipped_not_decoded(model_path, folder):
    Image.new("1", (20000, 20000)).save(folder / "c_bomb.png")  # 400 megapixels, a small file
    with pytest.warns(UserWarning, match=r"c_bomb.png \(image too large"):
        predictions = predict_folder(folder, model_path)
    assert [p.file for p in predictions] == ["10.png", "2.jpg", "a.png", "b.png"]
