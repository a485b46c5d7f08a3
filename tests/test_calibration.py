"""Calibration (ECE, temperature scaling, the stored temperature), --min-confidence and --tta."""

import json

import numpy as np
import pytest
from PIL import Image

from ferlab.errors import ConfigError, FerlabError, ModelFileError
from ferlab.evaluation.calibration import (
    TTA_VIEWS,
    UNCERTAIN,
    apply_temperature,
    coverage_at_accuracy,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
    risk_coverage,
)
from ferlab.inference.models import load_model
from ferlab.inference.onnx_model import TEMPERATURE_KEY, set_temperature

NAMES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def overconfident(n, seed, scale=4.0):
    """Labels drawn from softmax(z) and a model that says softmax(scale * z): overconfident."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.0, (n, 7))
    truth = softmax(z)
    labels = (rng.random((n, 1)) > np.cumsum(truth, axis=1)).sum(axis=1).clip(0, 6)
    return softmax(scale * z), labels


def tiny_onnx(path, seed=0):
    """A ferlab ONNX file without PyTorch: 48x48 pixels -> a fixed linear map -> softmax."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = (rng.normal(0, 1, (48 * 48, 7)) / 2000).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["pixels"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 48, 48])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 7])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.metadata_props.add(key="ferlab_class_names", value=json.dumps(NAMES))
    onnx.save(model, str(path))
    return path


def faces(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 48), dtype=np.uint8)


def test_ece_is_zero_when_confidence_equals_accuracy_and_counts_the_gap_otherwise():
    probs = np.array([[0.8, 0.2]] * 10)
    labels = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0)
    assert expected_calibration_error(probs, np.zeros(10, int)) == pytest.approx(0.2)
    bins = reliability_bins(probs, labels)
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 10


def test_a_temperature_fitted_on_held_out_faces_lowers_an_overconfident_models_ece():
    held_out, held_labels = overconfident(4000, seed=1)
    test, test_labels = overconfident(4000, seed=2)
    temperature = fit_temperature([held_out], held_labels)
    assert temperature == pytest.approx(4.0, rel=0.15)  # it undoes the scaling
    before = expected_calibration_error(test, test_labels)
    after = expected_calibration_error(apply_temperature(test, temperature), test_labels)
    assert before > 0.1 and after < 0.03
    assert (apply_temperature(test, temperature).argmax(1) == test.argmax(1)).all()


def test_risk_coverage_keeps_fewer_faces_and_more_accurate_ones_as_the_threshold_rises():
    probs, labels = overconfident(3000, seed=3, scale=1.0)
    rows = risk_coverage(probs, labels, [0.0, 0.3, 0.5])
    assert rows[0]["coverage"] == 1.0
    assert rows[0]["coverage"] >= rows[1]["coverage"] >= rows[2]["coverage"]
    assert rows[2]["accuracy"] > rows[0]["accuracy"]
    at = coverage_at_accuracy(probs, labels, 0.8)
    assert at["coverage"] is None or at["coverage"] < 1.0


def test_the_stored_temperature_round_trips_through_the_model_file(tmp_path):
    raw_path = tiny_onnx(tmp_path / "raw.onnx")
    stored = set_temperature(raw_path, tmp_path / "calibrated.onnx", {"none": 1.7, "flip": 1.5})
    raw, calibrated = load_model(raw_path), load_model(stored)
    assert calibrated.meta["temperature"] == {"none": 1.7, "flip": 1.5}
    assert calibrated.temperature == {"none": 1.7, "flip": 1.5}
    assert raw.temperature == {"none": 1.0, "flip": 1.0}
    images = faces(5)
    expected = apply_temperature(raw.predict_proba(images), 1.7)
    np.testing.assert_allclose(calibrated.predict_proba(images), expected, atol=1e-6)
    # Written again: one field, replaced.
    again = set_temperature(stored, tmp_path / "again.onnx", {"none": 0.9, "flip": 0.8})
    assert load_model(again).temperature == {"none": 0.9, "flip": 0.8}


@pytest.mark.parametrize(
    "value", ['{"none": 0}', '{"none": 1.2}', '{"none": "x", "flip": 1}', "[1]", "nan", "{"]
)
def test_a_damaged_temperature_field_is_refused_on_load(tmp_path, value):
    import onnx

    path = tiny_onnx(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    model.metadata_props.add(key=TEMPERATURE_KEY, value=value)
    onnx.save(model, str(path))
    with pytest.raises(ModelFileError, match=TEMPERATURE_KEY):
        load_model(path)


@pytest.mark.parametrize("tta", list(TTA_VIEWS))
def test_each_tta_choice_runs_its_documented_number_of_views(tmp_path, tta):
    model = load_model(tiny_onnx(tmp_path / "m.onnx"))
    seen = []
    run = model.session.run

    def counting(outputs, feeds):
        seen.append(feeds["pixels"].copy())
        return run(outputs, feeds)

    model.session.run = counting
    model.tta = tta
    images = faces(3)
    probs = model.predict_proba(images)
    assert len(seen) == TTA_VIEWS[tta] == {"none": 1, "flip": 2}[tta]
    np.testing.assert_array_equal(seen[0], images.astype(np.float32))
    if tta == "flip":
        np.testing.assert_array_equal(seen[1], images[:, :, ::-1].astype(np.float32))
        plain = run(None, {"pixels": images.astype(np.float32)})[0]
        mirror = run(None, {"pixels": images[:, :, ::-1].astype(np.float32)})[0]
        np.testing.assert_allclose(probs, (plain + mirror) / 2, atol=1e-6)
    with pytest.raises(ConfigError, match="tencrop"):
        model.tta = "tencrop"


def test_the_recognizer_takes_tta_and_refuses_unknown_choices(tmp_path):
    from ferlab.vision.recognizer import DEFAULT_TTA, EmotionRecognizer

    path = tiny_onnx(tmp_path / "m.onnx")
    assert EmotionRecognizer(path, detector="none").tta == DEFAULT_TTA == "flip"
    assert EmotionRecognizer(path, detector="none", tta="none").model.tta == "none"
    with pytest.raises(FerlabError, match="tta"):
        EmotionRecognizer(path, detector="none", tta="tencrop")
    with pytest.raises(FerlabError, match="min_confidence"):
        EmotionRecognizer(path, detector="none", min_confidence=1.5)


def test_min_confidence_turns_unsure_faces_into_uncertain_with_probabilities_given(tmp_path):
    from ferlab.vision.recognizer import EmotionRecognizer

    path = tiny_onnx(tmp_path / "m.onnx")
    photo = np.random.default_rng(0).integers(0, 256, (60, 60, 3), dtype=np.uint8)
    sure = EmotionRecognizer(path, detector="none").analyze_array(photo)[0]
    unsure = EmotionRecognizer(path, detector="none", min_confidence=0.99).analyze_array(photo)[0]
    assert sure.emotion in NAMES and unsure.emotion == UNCERTAIN
    assert unsure.probabilities == sure.probabilities and len(unsure.probabilities) == 7


def test_predict_min_confidence_and_tta_on_the_command_line(tmp_path, capsys):
    from ferlab.cli import main

    image = tmp_path / "face.png"
    Image.fromarray(faces(1)[0]).save(image)
    model = str(tiny_onnx(tmp_path / "m.onnx"))
    args = ["predict", str(image), "--model", model, "--detector", "none", "--format", "json"]
    assert main([*args, "--min-confidence", "0.99", "--tta", "none"]) == 0
    row = json.loads(capsys.readouterr().out)
    row = row[0] if isinstance(row, list) else row
    text = json.dumps(row)
    assert '"uncertain"' in text and "probabilities" in text
    assert main([*args, "--tta", "flip"]) == 0
    assert '"uncertain"' not in capsys.readouterr().out


def test_serve_min_confidence_answers_uncertain_with_probabilities(tmp_path, capsys):
    import io as bytes_io
    import warnings

    pytest.importorskip("httpx")
    skdata = pytest.importorskip("skimage.data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from ferlab.cli import main
    from ferlab.serve import ServeSettings
    from ferlab.serve.app import create_app

    buffer = bytes_io.BytesIO()
    Image.fromarray(skdata.astronaut()).save(buffer, format="PNG")
    answers = {}
    for min_confidence in (0.0, 0.999):
        options = ServeSettings(min_confidence=min_confidence).app_options()
        with TestClient(create_app(**options)) as client:  # loads the shipped model
            response = client.post(
                "/v1/analyze", content=buffer.getvalue(), headers={"Content-Type": "image/png"}
            )
        assert response.status_code == 200
        answers[min_confidence] = response.json()["faces"][0]
    assert answers[0.0]["emotion"] == "happy" and answers[0.999]["emotion"] == UNCERTAIN
    assert answers[0.999]["probabilities"] == answers[0.0]["probabilities"]
    assert main(["serve", "--min-confidence", "1.5"]) == 2
    error = capsys.readouterr().err
    assert "min_confidence" in error or "min-confidence" in error
    assert len(error.strip().splitlines()) == 1


def test_a_calibrated_copy_holds_the_temperature_in_its_one_record(tmp_path):
    import onnx

    from ferlab.inference.models import model_record

    old = tiny_onnx(tmp_path / "raw.onnx")  # the layout before the model record
    assert {p.key for p in onnx.load(str(old)).metadata_props} == {"ferlab_class_names"}
    stored = set_temperature(old, tmp_path / "calibrated.onnx", {"none": 1.7, "flip": 1.5})
    props = {p.key: p.value for p in onnx.load(str(stored)).metadata_props}
    assert set(props) == {"ferlab"}
    record = json.loads(props["ferlab"])
    assert record["format_version"] == 2 and record["kind"] == "onnx"
    assert record["temperature"] == {"none": 1.7, "flip": 1.5} and record["class_names"] == NAMES
    assert model_record(stored) == record


@pytest.mark.parametrize("value", [{"none": 0}, {"none": 1.2}, {"none": "x", "flip": 1}, [1]])
def test_a_damaged_temperature_in_the_record_is_refused_on_load(tmp_path, value):
    import onnx

    stored = set_temperature(
        tiny_onnx(tmp_path / "m.onnx"), tmp_path / "c.onnx", {"none": 1.0, "flip": 1.0}
    )
    model = onnx.load(str(stored))
    for entry in model.metadata_props:
        entry.value = json.dumps(json.loads(entry.value) | {"temperature": value})
    onnx.save(model, str(stored))
    with pytest.raises(ModelFileError, match="temperature") as caught:
        load_model(stored)
    assert "\n" not in str(caught.value)
