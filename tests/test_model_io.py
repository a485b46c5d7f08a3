import pickle
import zipfile

import numpy as np
import pytest

from ferlab.arrays import read_npz, write_npz
from ferlab.errors import ModelFileError
from ferlab.nn import FullyConnectedNet, Preprocessor, load_fully_connected


@pytest.fixture
def trained_model():
    rng = np.random.default_rng(0)
    model = FullyConnectedNet(12, [8, 5], 3, dropout=0.1, reg=0.01, seed=0)
    images = rng.integers(0, 256, (30, 3, 4), dtype=np.uint8)
    model.preprocessor = Preprocessor("standardize").fit(images)
    model.class_names = ["a", "b", "c"]
    model.input_shape = (3, 4)
    return model, images


def test_round_trip_gives_identical_predictions(tmp_path, trained_model):
    model, images = trained_model
    model.save(tmp_path / "m.npz")
    loaded = load_fully_connected(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.predict_proba(images), model.predict_proba(images))
    assert loaded.class_names == ["a", "b", "c"]
    assert loaded.input_shape == (3, 4)
    assert loaded.config() == model.config()


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_file_holding_a_pickle_is_refused_without_running_it(tmp_path, trained_model):
    model, _ = trained_model
    model.save(tmp_path / "m.npz")
    marker = tmp_path / "pwned"
    with np.load(tmp_path / "m.npz") as good:
        arrays = dict(good)
    arrays["param/W1"] = np.array([_Exploit(str(marker))], dtype=object)
    np.savez(tmp_path / "evil.npz", **arrays)
    with pytest.raises(ModelFileError, match="pickled"):
        load_fully_connected(tmp_path / "evil.npz")
    (tmp_path / "raw.pkl").write_bytes(pickle.dumps(_Exploit(str(marker))))
    with pytest.raises(ModelFileError, match="pickled"):
        load_fully_connected(tmp_path / "raw.pkl")
    assert not marker.exists()


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.9])
def test_truncated_file_fails_cleanly(tmp_path, trained_model, keep):
    model, _ = trained_model
    model.save(tmp_path / "m.npz")
    data = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelFileError):
        load_fully_connected(tmp_path / "cut.npz")


def test_foreign_and_tampered_files_fail_cleanly(tmp_path, trained_model):
    np.savez(tmp_path / "foreign.npz", x=np.zeros(3))
    with pytest.raises(ModelFileError, match="not a ferlab file"):
        load_fully_connected(tmp_path / "foreign.npz")
    model, _ = trained_model
    meta, arrays = read_npz(model.save(tmp_path / "m.npz"))
    arrays["param/W1"] = arrays["param/W1"][:, :2]
    write_npz(tmp_path / "tampered.npz", meta, arrays)
    with pytest.raises(ModelFileError, match="shape"):
        load_fully_connected(tmp_path / "tampered.npz")
    with pytest.raises(ModelFileError, match="no such file"):
        load_fully_connected(tmp_path / "missing.npz")


def test_checkpoint_is_not_a_model(tmp_path):
    write_npz(tmp_path / "c.npz", {"format": "ferlab-checkpoint"}, {})
    with pytest.raises(ModelFileError, match="expected a ferlab-model"):
        load_fully_connected(tmp_path / "c.npz")


def test_saved_file_is_a_plain_npz_without_object_arrays(tmp_path, trained_model):
    model, _ = trained_model
    model.save(tmp_path / "m.npz")
    with zipfile.ZipFile(tmp_path / "m.npz") as archive:
        assert all(name.endswith(".npy") for name in archive.namelist())
    with np.load(tmp_path / "m.npz", allow_pickle=False) as archive:
        assert all(archive[name].dtype != object for name in archive.files)
