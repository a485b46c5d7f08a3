import json
import pickle
import zipfile

import numpy as np
import pytest

from ferlab.common.arrays import read_npz, write_npz
from ferlab.errors import ModelFileError
from ferlab.inference.models import load_model, model_record
from ferlab.modelfile import FORMAT_VERSION, FORMATS, decode_record, encode_record, new_record
from ferlab.modelfile.record import FIELDS
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


# -- the one model record, and files of the layout written before it -------------------------


def old_layout_npz(model, path):
    """A fully connected file as ferlab wrote it before the model record (format 0): JSON
    under ``__meta__``, no format version, the training record under ``training``."""
    meta = {
        "format": "ferlab-model",
        "kind": "fully_connected",
        "ferlab_version": "0.1.0",
        "architecture": model.config(),
        "class_names": model.class_names,
        "input_shape": list(model.input_shape),
        "preprocessing": None,
        "trainable": model.trainable,
        "training": {"data": {"dataset": "fer2013"}, "seed": 3},
    }
    arrays = {f"param/{name}": value for name, value in model.params.items()}
    pre_meta, pre_arrays = model.preprocessor.state()
    meta["preprocessing"] = pre_meta
    arrays.update({f"preprocessing/{k}": v for k, v in pre_arrays.items()})
    return write_npz(path, meta, arrays)


def test_a_saved_model_holds_one_record_with_its_format_version(tmp_path, trained_model):
    model, _ = trained_model
    model.training_info = {"seed": 4}
    path = model.save(tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as archive:
        assert "ferlab" in archive.files and "__meta__" not in archive.files
        record = json.loads(archive["ferlab"].tobytes())
    assert set(record) == set(FIELDS)
    assert record["format"] == "ferlab-model" and record["format_version"] == FORMAT_VERSION == 2
    assert record["kind"] == "fully_connected" and record["class_names"] == ["a", "b", "c"]
    assert record["input_shape"] == [3, 4] and record["training"] == {"seed": 4}
    assert record["preprocessing"]["mode"] == "standardize" and record["temperature"] is None
    assert model_record(path) == record


def test_a_file_of_the_old_layout_loads_as_before(tmp_path, trained_model):
    model, images = trained_model
    path = old_layout_npz(model, tmp_path / "old.npz")
    with np.load(path, allow_pickle=False) as archive:
        assert "__meta__" in archive.files and "ferlab" not in archive.files
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict_proba(images), model.predict_proba(images))
    assert loaded.class_names == ["a", "b", "c"] and loaded.input_shape == (3, 4)
    assert loaded.training_info == {"data": {"dataset": "fer2013"}, "seed": 3}
    record = model_record(path)
    assert record["format_version"] == 2 and record["training"]["seed"] == 3
    # Saved again, it is written in the one layout and predicts the same.
    again = load_model(loaded.save(tmp_path / "again.npz"))
    np.testing.assert_array_equal(again.predict_proba(images), model.predict_proba(images))
    assert model_record(tmp_path / "again.npz")["training"] == record["training"]


def test_an_old_layout_file_is_checked_as_strictly(tmp_path, trained_model):
    model, _ = trained_model
    meta, arrays = read_npz(old_layout_npz(model, tmp_path / "old.npz"))
    meta["class_names"] = ["a", "b"]
    write_npz(tmp_path / "names.npz", meta, arrays)
    with pytest.raises(ModelFileError, match="class_names must be 3 names"):
        load_model(tmp_path / "names.npz")
    meta["class_names"], meta["kind"] = ["a", "b", "c"], "cnn"
    write_npz(tmp_path / "kind.npz", meta, arrays)
    with pytest.raises(ModelFileError, match="not a fully connected one"):
        load_fully_connected(tmp_path / "kind.npz")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format_version": 3}, r"newer ferlab \(format 3\); upgrade ferlab"),
        ({"format_version": "2"}, "format_version must be a positive integer"),
        ({"format_version": 1}, "a format 1 record where format 2 was expected"),
        ({"run_me": "os.system"}, "unknown model record fields run_me"),
        ({"format": "ferlab-cnn"}, "expected a ferlab-model file"),
        ({"kind": "svm"}, "unknown model kind 'svm'"),
        ({"class_names": "abc"}, "class_names must be a list"),
        ({"class_names": ["x"] * 1001}, "class_names must be a list of at most 1000"),
        ({"input_shape": [3, 10**9]}, "input_shape must be 1 to 3 sizes"),
        ({"training": [1, 2]}, "training must be a JSON object"),
        ({"temperature": {"none": 0.0, "flip": 1.0}}, "temperature: its 'none' temperature"),
        ({"name": "x" * 5000}, "name must be text of at most 1000"),
        ({"architecture": {**FullyConnectedNet(12, [8, 5], 3).config(), "dtype": "O"}}, "dtype"),
    ],
)
def test_a_damaged_or_hostile_record_field_is_one_line(tmp_path, trained_model, change, message):
    model, _ = trained_model
    meta, arrays = read_npz(model.save(tmp_path / "m.npz"))
    write_npz(tmp_path / "bad.npz", meta | change, arrays, meta_key="ferlab")
    with pytest.raises(ModelFileError, match=message) as caught:
        load_model(tmp_path / "bad.npz")
    assert "\n" not in str(caught.value) and "bad.npz" in str(caught.value)


def test_record_text_that_is_huge_nested_or_not_json_is_refused_unparsed(tmp_path):
    for name, text in {
        "deep": "[" * 100_000 + "]" * 100_000,
        "long": json.dumps({"name": "x" * 2_000_000}),
        "nan": '{"format_version": NaN}',
        "bytes": "\udcff",
    }.items():
        with pytest.raises(ModelFileError) as caught:
            decode_record(text.encode("utf-8", "surrogatepass"), name, "fully_connected")
        assert str(caught.value).startswith(name) and "\n" not in str(caught.value)


def test_a_file_with_two_metadata_entries_is_refused(tmp_path, trained_model):
    model, _ = trained_model
    meta, arrays = read_npz(model.save(tmp_path / "m.npz"))
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "two.npz", ferlab=arrays["__meta__"], **arrays)
    with pytest.raises(ModelFileError, match="two metadata entries"):
        load_model(tmp_path / "two.npz")


def test_new_record_refuses_what_it_does_not_know():
    with pytest.raises(TypeError, match="unknown model record fields"):
        new_record("cnn", colour="red")
    record = new_record("onnx", class_names=["a", "b"], input_shape=[48, 48])
    assert record["format"] == FORMATS["onnx"] == "ferlab-onnx"
    assert json.loads(encode_record(record)) == record


def test_mutated_record_text_gives_a_record_or_one_model_file_error(trained_model):
    """Bytes of a real record flipped, cut or duplicated at random (seeded): the one reader
    returns a checked record or raises ModelFileError, never anything else."""
    model, _ = trained_model
    text = encode_record(
        new_record(
            "fully_connected",
            architecture=model.config(),
            class_names=["a", "b", "c"],
            input_shape=[3, 4],
            preprocessing={"mode": "standardize", "scale": 2.0},
            temperature={"none": 1.5, "flip": 1.2},
        )
    ).encode()
    rng = np.random.default_rng(0)
    outcomes = {"record": 0, "refused": 0}
    for _ in range(500):
        data = bytearray(text)
        for _ in range(rng.integers(1, 4)):
            at = int(rng.integers(0, len(data)))
            choice = rng.integers(0, 3)
            if choice == 0:
                data[at] = int(rng.integers(0, 256))
            elif choice == 1:
                del data[at : at + int(rng.integers(1, 20))]
            else:
                data[at:at] = data[at : at + int(rng.integers(1, 20))]
        try:
            record = decode_record(bytes(data), "m.npz", "fully_connected")
        except ModelFileError as exc:
            assert "\n" not in str(exc)
            outcomes["refused"] += 1
        else:
            assert set(record) == set(FIELDS) and record["kind"] == "fully_connected"
            outcomes["record"] += 1
    assert outcomes["refused"] > 100 and outcomes["record"] > 0
