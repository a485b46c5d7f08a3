"""The model that ships inside ferlab: present, small, and as accurate as its card says."""

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from ferlab.assets import model_card, shipped_model_path
from ferlab.models import load_model

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
