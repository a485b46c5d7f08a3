"""The model that ships inside ferlab: present, small, and as accurate as its card says."""

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from ferlab.assets import model_card, shipped_model_path
from ferlab.inference.models import load_model

FER2013 = Path(
    os.environ.get(
        "FERLAB_FER2013",
        Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013-images.tar.gz",
    )
)


def test_the_shipped_file_matches_its_card():
    path, card = shipped_model_path(), model_card()
    data = path.read_bytes()
    assert len(data) == card["bytes"] < 10 * 1024 * 1024
    assert hashlib.sha256(data).hexdigest() == card["sha256"]
    model = load_model(path)
    assert model.class_names == card["classes"] and model.input_shape == (48, 48)
    assert model.parameter_count == card["parameters"]
    assert set(card["recall"]["public_test"]) == set(card["classes"])


@pytest.mark.skipif(not FER2013.is_file(), reason=f"FER2013 not found at {FER2013}")
def test_the_shipped_model_is_as_accurate_as_its_card_on_real_test_faces():
    from ferlab.data import load_fer2013

    card = model_card()
    public = load_fer2013(FER2013).split("public_test")
    sample = np.argsort(public.names)[:: card["check_sample"]["every"]]
    assert len(sample) == card["check_sample"]["size"]
    model = load_model(shipped_model_path())
    accuracy = float((model.predict(public.images[sample]) == public.labels[sample]).mean())
    # The same file on the same faces: only float rounding across machines may differ.
    assert accuracy == pytest.approx(card["check_sample"]["accuracy"], abs=0.004)
    assert accuracy > card["accuracy"]["public_test"] - 0.05


def test_the_shipped_file_keeps_its_old_layout_and_reads_as_one_record():
    """The shipped model predates the model record (separate ``ferlab_*`` entries); it is read,
    not rewritten, into the same record as a new file's."""
    onnx = pytest.importorskip("onnx")
    from ferlab.inference.models import model_record

    path, card = shipped_model_path(), model_card()
    keys = {p.key for p in onnx.load(str(path)).metadata_props}
    assert "ferlab" not in keys and "ferlab_class_names" in keys
    record = model_record("shipped")
    assert record["format_version"] == 2 and record["kind"] == "onnx"
    assert record["class_names"] == card["classes"] and record["name"] == "fer2013_cnn"
    assert record["quantization"].startswith("int8") and record["training"]["seed"] == 0
    assert hashlib.sha256(path.read_bytes()).hexdigest() == card["sha256"]
