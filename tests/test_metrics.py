import json

import numpy as np
import pytest

from ferlab.cli import main
from ferlab.errors import ConfigError
from ferlab.evaluation.metrics import confusion_matrix, evaluation_report, normalize_rows
from ferlab.evaluation.scoring import evaluate_classifier, evaluate_split, resolve_split

# Rows: true class, columns: predicted.  [[3, 1, 0], [2, 1, 1], [0, 0, 2]]
Y_TRUE = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
Y_PRED = [0, 0, 0, 1, 0, 0, 1, 2, 2, 2]
NAMES = ["a", "b", "c"]


def test_confusion_matrix_and_normalisation_by_hand():
    matrix = confusion_matrix(Y_TRUE, Y_PRED, 3)
    np.testing.assert_array_equal(matrix, [[3, 1, 0], [2, 1, 1], [0, 0, 2]])
    np.testing.assert_allclose(
        normalize_rows(matrix), [[0.75, 0.25, 0], [0.5, 0.25, 0.25], [0, 0, 1]]
    )


def test_measures_of_the_raw_matrix_by_hand():
    report = evaluation_report(Y_TRUE, Y_PRED, NAMES)
    m = report.raw.per_class
    np.testing.assert_allclose(m["recall"], [0.75, 0.25, 1.0])
    np.testing.assert_allclose(m["precision"], [0.6, 0.5, 2 / 3])
    np.testing.assert_allclose(m["f1"], [2 / 3, 1 / 3, 0.8])
    # (TP + TN) / N with N = 10: TN = 4, 5, 7.
    np.testing.assert_allclose(m["classification_rate"], [0.7, 0.6, 0.9])
    # The report's variant: trace / (trace + FP + FN) with trace = 6.
    np.testing.assert_allclose(m["report_classification_rate"], [6 / 9, 6 / 10, 6 / 7])
    assert report.raw.average["recall"] == pytest.approx(2 / 3)
    assert report.accuracy == pytest.approx(0.6) and report.error_rate == pytest.approx(0.4)
    assert report.class_counts.tolist() == [4, 4, 2]
    assert report.notes == []


def test_measures_of_the_normalised_matrix_by_hand():
    m = evaluation_report(Y_TRUE, Y_PRED, NAMES).normalized.per_class
    np.testing.assert_allclose(m["recall"], [0.75, 0.25, 1.0])
    np.testing.assert_allclose(m["precision"], [0.6, 0.5, 0.8])
    np.testing.assert_allclose(m["f1"], [2 / 3, 1 / 3, 16 / 18])
    np.testing.assert_allclose(m["classification_rate"], [0.75, 2 / 3, 2.75 / 3])
    np.testing.assert_allclose(m["report_classification_rate"], [2 / 2.75, 2 / 3, 2 / 2.25])


def test_the_original_reports_cnn_figures_are_reproduced():
    # The report's best CNN on PublicTest, with its published precision and (trace) CR in %.
    matrix = np.array([
        [151, 10, 50, 53, 106, 14, 83], [2, 28, 7, 2, 11, 0, 6], [24, 1, 210, 38, 124, 33, 66],
        [20, 0, 31, 698, 48, 18, 80], [28, 1, 106, 70, 309, 7, 132], [5, 2, 62, 24, 15, 291, 16],
        [32, 1, 70, 59, 117, 3, 325],
    ])  # fmt: skip
    y_true = np.repeat(np.repeat(np.arange(7), 7), matrix.ravel())
    y_pred = np.repeat(np.tile(np.arange(7), 7), matrix.ravel())
    report = evaluation_report(y_true, y_pred, [str(i) for i in range(1, 8)])
    np.testing.assert_array_equal(report.confusion_matrix, matrix)
    m = report.raw.per_class
    np.testing.assert_allclose(
        100 * m["precision"], [57.6, 65.1, 39.2, 73.9, 42.3, 79.5, 45.9], atol=0.06
    )
    np.testing.assert_allclose(
        100 * m["report_classification_rate"], [82.5, 97.9, 76.7, 82.0, 72.4, 91.0, 75.1], atol=0.06
    )
    assert 100 * report.accuracy == pytest.approx(56.1, abs=0.05)


def test_never_predicted_and_absent_classes_give_zero_with_notes():
    # Class "b" is never predicted; class "c" never occurs.
    report = evaluation_report([0, 0, 1, 1], [0, 2, 0, 0], NAMES)
    for measures in (report.raw, report.normalized):
        for values in measures.per_class.values():
            assert np.all(np.isfinite(values))
        assert measures.per_class["precision"][1] == 0.0
        assert measures.per_class["recall"][2] == 0.0
        assert measures.per_class["f1"][1] == 0.0 and measures.per_class["f1"][2] == 0.0
    np.testing.assert_array_equal(report.normalized_confusion_matrix[2], [0, 0, 0])
    assert any("never predicted: b" in note for note in report.notes)
    assert any("absent from the evaluated set: c" in note for note in report.notes)
    json.dumps(report.to_dict(), allow_nan=False)
    assert "never predicted: b" in report.to_markdown() and "never predicted: b" in report.to_text()


def test_empty_evaluation_does_not_crash():
    report = evaluation_report([], [], NAMES)
    assert report.accuracy == 0.0 and report.n == 0
    json.dumps(report.to_dict(), allow_nan=False)


def test_labels_outside_the_classes_are_refused():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 3], [0, 1], 3)


def test_outputs_hold_every_figure():
    report = evaluation_report(Y_TRUE, Y_PRED, NAMES, title="hand")
    d = report.to_dict()
    assert d["accuracy"] == pytest.approx(0.6)
    assert d["confusion_matrix"] == [[3, 1, 0], [2, 1, 1], [0, 0, 2]]
    assert d["normalized_confusion_matrix"][0] == [0.75, 0.25, 0.0]
    assert d["measures"]["per_class"]["recall"]["a"] == 0.75
    assert d["normalized_measures"]["average"]["precision"] == pytest.approx(1.9 / 3)
    assert d["class_counts"] == {"a": 4, "b": 4, "c": 2}
    md = report.to_markdown()
    assert "| a | 3 | 1 | 0 |" in md and "| a | 0.75 | 0.25 | 0.00 |" in md
    assert "| Recall | 75.0 | 25.0 | 100.0 | 66.7 |" in md
    assert "Accuracy (correct classifications): 60.00%" in report.to_text()


class FixedClassifier:
    """Predicts the class stored in each image's first pixel."""

    class_names = NAMES
    input_shape = (2, 2)

    def predict_proba(self, X):
        return np.eye(3)[X[:, 0, 0]]


def test_evaluate_classifier_writes_json_markdown_and_heat_map(tmp_path):
    images = np.zeros((10, 2, 2), dtype=np.uint8)
    images[:, 0, 0] = Y_PRED
    report = evaluate_classifier(
        FixedClassifier(), images, np.array(Y_TRUE), NAMES, tmp_path / "out"
    )
    assert report.confusion_matrix.tolist() == [[3, 1, 0], [2, 1, 1], [0, 0, 2]]
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["accuracy"] == pytest.approx(0.6)
    assert (tmp_path / "out" / "report.md").read_text().startswith("# Evaluation")
    assert (tmp_path / "out" / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_split_names_are_resolved_or_refused():
    assert resolve_split("fer2013", "public") == "public_test"
    assert resolve_split("fer2013", "private") == "private_test"
    assert resolve_split("digits", "test") == "test" and resolve_split("digits", "val") == "val"
    with pytest.raises(ConfigError, match="no split 'public'.*choose one of: val, train, test"):
        resolve_split("digits", "public")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from ferlab.runs.fc import run_training
    from ferlab.settings.loading import load_config

    out = tmp_path_factory.mktemp("digits-run")
    config = load_config(
        None, ["data.dataset='digits'", "solver.epochs=3", "model.hidden_dims=[16]"]
    )
    return out, run_training(config, out, verbose=False)


def test_evaluate_split_rebuilds_the_validation_part(digits_run):
    from ferlab.inference.models import load_model

    out, summary = digits_run
    model = load_model(out / "model.npz")
    val = evaluate_split(model, None, "val")
    assert val.n == summary["n_val"] and val.accuracy == pytest.approx(summary["val_accuracy"])
    test = evaluate_split(model, None, "test")
    assert test.accuracy == pytest.approx(summary["test_accuracy"])


def test_evaluate_command_prints_and_saves_the_report(digits_run, tmp_path, capsys):
    out, summary = digits_run
    code = main(["evaluate", "--model", str(out / "model.npz"), "--split", "test",
                 "--out", str(tmp_path / "ev")])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert f"Accuracy (correct classifications): {100 * summary['test_accuracy']:.2f}%" in printed
    assert "Confusion matrix normalised by class size" in printed
    assert {p.name for p in (tmp_path / "ev").iterdir()} == {
        "report.json",
        "report.md",
        "confusion.png",
    }
    code = main(["evaluate", "--model", str(out / "model.npz"), "--split", "private"])
    assert code == 2 and "no split 'private'" in capsys.readouterr().err


def test_evaluate_split_rebuilds_a_validation_part_held_out_with_a_split_seed(tmp_path):
    from ferlab.inference.models import load_model
    from ferlab.runs.fc import run_training
    from ferlab.settings.loading import load_config

    overrides = ["seed=1", "data.split_seed=4", "solver.epochs=2", "model.hidden_dims=[8]"]
    summary = run_training(load_config(None, overrides), tmp_path, verbose=False)
    model = load_model(tmp_path / "model.npz")
    assert model.training_info["data"]["split_seed"] == 4
    val = evaluate_split(model, None, "val")
    assert val.n == summary["n_val"] and val.accuracy == pytest.approx(summary["val_accuracy"])


def test_evaluate_split_drops_classes_the_model_was_trained_without(tmp_path):
    from ferlab.inference.models import load_model
    from ferlab.runs.fc import run_training
    from ferlab.settings.loading import load_config

    overrides = ["solver.epochs=1", "model.hidden_dims=[8]", "data.exclude_classes=['9']"]
    summary = run_training(load_config(None, overrides), tmp_path, verbose=False)
    report = evaluate_split(load_model(tmp_path / "model.npz"), None, "test")
    assert report.class_names == [str(d) for d in range(9)]
    assert report.accuracy == pytest.approx(summary["test_accuracy"])
