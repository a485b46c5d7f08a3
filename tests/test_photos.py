"""Your own labelled photos (ferlab.photos): evaluate on them, adapt to them, with the paired test.

Every photo is built here: the real astronaut portrait's face (scikit-image) placed on real
photos that ship with scikit-image and scikit-learn, some of them as a dim, colour-cast camera
would take them. The labels are the test's own: "happy" for bright photos, "sad" for dim ones,
so that a model adapted to these photos has something real to learn.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

skdata = pytest.importorskip("skimage.data")
pytest.importorskip("torch")

from ferlab.cli import main  # noqa: E402
from ferlab.compare import paired_tests  # noqa: E402
from ferlab.errors import ConfigError, DataError  # noqa: E402
from ferlab.inference.models import load_model  # noqa: E402
from ferlab.photos import adapt_photos, evaluate_photos, load_photo_set  # noqa: E402
from ferlab.photos.adapt import best_choice, check_class_sizes  # noqa: E402
from ferlab.photos.parent import rebuild_from_onnx  # noqa: E402
from ferlab.photos.sets import class_indices, parse_mapping  # noqa: E402
from ferlab.photos.tune import PARENT, candidates  # noqa: E402
from ferlab.vision.recognizer import to_gray  # noqa: E402
from ferlab.vision.scenes import background_photos, place_faces  # noqa: E402

PER_CLASS = 10


def dim(rgb: np.ndarray) -> np.ndarray:
    """A dim, tungsten-cast version of an RGB photo (a third of the light, in linear light)."""
    linear = (rgb / 255.0) ** 2.2 * np.array([1.0, 0.8, 0.55]) * 0.3
    return (linear ** (1 / 2.2) * 255 + 0.5).astype(np.uint8)


@pytest.fixture(scope="module")
def face():
    """The astronaut's face with FER2013-like margins, grayscale (150, 150)."""
    return to_gray(skdata.astronaut())[40:190, 150:300]


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, face):
    """happy/ (bright photos), sad/ (dim ones), each PER_CLASS photos of one face, and one
    photo without a face (coffee) in happy/."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    backgrounds = background_photos((320, 240))
    for label in ("happy", "sad"):
        (root / label).mkdir()
        for i in range(PER_CLASS):
            side = int(rng.integers(110, 150))
            scene, _ = place_faces(backgrounds[i % 3], face[None], [side], rng)
            scene = dim(scene) if label == "sad" else scene
            Image.fromarray(scene).save(root / label / f"{i}.jpg", quality=90)
    Image.fromarray(skdata.coffee()).save(root / "happy" / "coffee.png")
    return root


@pytest.fixture(scope="module")
def adapted(photo_dir, tmp_path_factory):
    """One `ferlab adapt` run on the photos (3 folds), and its folder."""
    out = tmp_path_factory.mktemp("adapt") / "run"
    code = main(["adapt", "--photos", str(photo_dir), "--out", str(out), "--folds", "3", "--quiet"])
    assert code == 0
    return out, json.loads((out / "adapt.json").read_text())


def test_a_class_folder_set_and_a_csv_with_boxes_list_the_same_kind_of_rows(photo_dir, face):
    photos = load_photo_set(photo_dir)
    assert len(photos) == 2 * PER_CLASS + 1
    assert photos.counts() == {"happy": PER_CLASS + 1, "sad": PER_CLASS}
    scene, boxes = place_faces(
        background_photos((480, 320))[1], np.stack([face, face]), [130, 120],
        np.random.default_rng(1),
    )  # fmt: skip
    Image.fromarray(scene).save(photo_dir.parent / "two.png")
    csv = photo_dir.parent / "faces.csv"
    rows = [
        f"two.png,{label},{x},{y},{w},{h}"
        for label, (x, y, w, h) in zip(("joy", "calm"), boxes, strict=True)
    ]
    csv.write_text("path,label,x,y,w,h\n" + "\n".join(rows) + "\n")
    listed = load_photo_set(csv, parse_mapping(["joy=happy", "calm=neutral"]))
    assert listed.labels == ["happy", "neutral"] and listed.boxes == [tuple(b) for b in boxes]
    result = evaluate_photos(listed, verbose=False)
    assert len(result.faces) == 2  # both boxed faces found, each in its own box
    for detection, (x, y, w, h) in zip(result.faces.boxes, boxes, strict=True):
        assert x - 10 <= detection.x and detection.x + detection.w <= x + w + 10
        assert y - 10 <= detection.y and detection.y + detection.h <= y + h + 10
    # The same smiling face twice: happy both times, so the row labelled neutral is a mistake.
    assert [r["predicted"] for r in result.face_rows()] == ["happy", "happy"]
    assert result.report.accuracy == 0.5 and list(result.mistakes()) == [1]


def test_evaluate_photos_writes_the_report_the_faceless_photo_and_the_mistakes(photo_dir, tmp_path):
    result = evaluate_photos(photo_dir, out_dir=tmp_path, verbose=False)
    assert [item["path"].endswith("coffee.png") for item in result.no_face] == [True]
    assert len(result.faces) == 2 * PER_CLASS
    predicted = result.predictions
    labels = result.labels
    assert result.report.accuracy == pytest.approx(float((predicted == labels).mean()))
    matrix = result.report.confusion_matrix
    assert matrix.sum() == 2 * PER_CLASS and matrix[3].sum() == PER_CLASS  # happy's row
    for name in ("report.json", "report.md", "confusion.png", "faces.json", "mistakes.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "coffee.png" in (tmp_path / "no_face.txt").read_text()
    mistakes = result.mistakes()
    assert len(mistakes) == int((predicted != labels).sum())
    confidence = result.probabilities[mistakes, predicted[mistakes]]
    assert list(confidence) == sorted(confidence, reverse=True)
    sheet = Image.open(tmp_path / "mistakes.png")
    assert sheet.format == "PNG" and sheet.width >= 144


def test_evaluate_photos_from_the_command_line(photo_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", "shipped", "--photos", str(photo_dir), "--out", str(out),
                 "--quiet"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "Confusion matrix" in printed and "without a face found" in printed
    assert json.loads((out / "faces.json").read_text())["faces"] == 2 * PER_CLASS
    # The folder is not empty now: refused without --force, in one line.
    assert (
        main(["evaluate", "--model", "shipped", "--photos", str(photo_dir), "--out", str(out)]) == 2
    )
    assert "not empty" in capsys.readouterr().err


def test_unknown_labels_are_refused_in_one_line_unless_mapped(tmp_path, photo_dir, capsys):
    (tmp_path / "contempt").mkdir()
    for name in ("0.jpg", "1.jpg"):
        (tmp_path / "contempt" / name).write_bytes((photo_dir / "sad" / name).read_bytes())
    assert main(["evaluate", "--model", "shipped", "--photos", str(tmp_path), "--out",
                 str(tmp_path / "out")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "['contempt']" in err[0] and "--map" in err[0]
    result = evaluate_photos(tmp_path, mapping={"contempt": "neutral"}, verbose=False)
    assert len(result.faces) == 2
    with pytest.raises(DataError, match="--new-classes"):
        class_indices(["contempt"], ["happy"], [])
    with pytest.raises(ConfigError, match="LABEL=CLASS"):
        parse_mapping(["contempt"])


def test_no_face_in_any_photo_is_one_line(tmp_path, capsys):
    (tmp_path / "happy").mkdir()
    for name in ("coffee", "chelsea"):
        Image.fromarray(getattr(skdata, name)()).save(tmp_path / "happy" / f"{name}.png")
    assert main(["adapt", "--photos", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no face found in any of the 2 photos" in err[0]
    assert not (tmp_path / "out").exists()  # a failed run leaves no folder behind


def test_a_class_with_too_few_photos_for_the_folds_is_one_line(photo_dir, tmp_path, capsys):
    assert main(["adapt", "--photos", str(photo_dir), "--out", str(tmp_path / "o"),
                 "--folds", "11", "--quiet"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sad has 10" in err[0] and "11 folds" in err[0]
    with pytest.raises(ConfigError, match="at least 3"):
        check_class_sizes(np.array([0, 1] * 5), ["a", "b"], 2)


def test_the_paired_test_matches_hand_computed_values():
    # Fold errors of the original (a) and the adapted model (b) on 3 folds of 30 photos.
    a, b = [0.5, 0.4, 0.45], [0.3, 0.35, 0.3]
    tests = paired_tests(a, b, n_train=20, n_test=10)
    d = [0.2, 0.05, 0.15]
    mean = sum(d) / 3  # 0.13333
    var = sum((x - mean) ** 2 for x in d) / 2  # 0.0058333
    t = mean / math.sqrt((1 / 3 + 10 / 20) * var)
    assert t == pytest.approx(1.9124, abs=1e-4)
    from scipy import stats

    corrected = tests["corrected_resampled_t"]
    assert corrected["statistic"] == pytest.approx(t)
    assert corrected["p_value"] == pytest.approx(2 * stats.t.sf(t, 2))
    assert corrected["p_value"] == pytest.approx(0.1961, abs=1e-3)
    assert tests["paired_t"]["statistic"] == pytest.approx(mean / math.sqrt(var / 3))
    # Wilcoxon: all three differences positive, so W = 0 of the smaller-sign ranks; exact p 0.25.
    assert tests["wilcoxon"]["p_value"] == pytest.approx(0.25)


def test_the_run_records_its_own_paired_test(adapted):
    out, record = adapted
    rows = record["fold_results"]
    assert len(rows) == 3 and sum(r["n_test"] for r in rows) == 2 * PER_CLASS
    a = [r["error_original"] for r in rows]
    b = [r["error_adapted"] for r in rows]
    d = np.subtract(a, b)
    n_train = np.mean([r["n_train"] for r in rows])
    n_test = np.mean([r["n_test"] for r in rows])
    corrected = record["tests"]["corrected_resampled_t"]
    if np.ptp(d) > 1e-12:
        t = d.mean() / math.sqrt((1 / 3 + n_test / n_train) * d.var(ddof=1))
        assert corrected["statistic"] == pytest.approx(t)
    assert record["original"]["mean_error"] == pytest.approx(np.mean(a))
    assert record["verdict"].count("\n") == 0 and "p = " in record["verdict"]
    # The shipped model calls every photo of this face happy; the dim ones are labelled sad.
    assert record["original"]["mean_error"] == pytest.approx(0.5, abs=0.2)
    assert record["adapted"]["mean_error"] < record["original"]["mean_error"]


def test_the_adapted_file_loads_and_gives_the_records_predictions(adapted, photo_dir):
    out, record = adapted
    card = json.loads((out / "model_card.json").read_text())
    assert (
        card["parent"]["path"].endswith("fer2013_cnn.onnx") and len(card["parent"]["sha256"]) == 64
    )
    assert card["data"]["source"] == str(photo_dir) and card["data"]["faces"] == 2 * PER_CLASS
    assert "Parent model" in (out / "MODEL_CARD.md").read_text()
    model = load_model(out / "model.onnx")
    assert model.training_info["adapted_from"]["sha256"] == card["parent"]["sha256"]
    again = evaluate_photos(photo_dir, out / "model.onnx", verbose=False)
    assert [r["predicted"] for r in again.face_rows()] == [
        p["predicted"] for p in record["predictions"]
    ]
    assert record["training_accuracy"] > 0.5  # it learnt the dim photos' label


def test_the_network_rebuilt_from_the_shipped_file_agrees_with_it(face):
    shipped = load_model("shipped")
    rng = np.random.default_rng(0)
    images = np.stack([np.asarray(Image.fromarray(face).resize((48, 48)))] * 8).astype(np.int16)
    images = np.clip(images + rng.integers(-40, 40, images.shape), 0, 255).astype(np.uint8)
    network, agreement = rebuild_from_onnx(shipped, images)
    assert agreement == 1.0 and network.crop == 40
    gap = np.abs(network.predict_proba(images) - shipped.predict_proba(images)).max()
    assert gap < 0.1  # int8 weights and activations against their float reading


def test_new_classes_grow_the_model(photo_dir, tmp_path):
    record = adapt_photos(
        photo_dir, out_dir=tmp_path, mapping={"sad": "dim"}, new_classes=["dim"], folds=3,
        verbose=False,
    )  # fmt: skip
    assert record["class_names"][-1] == "dim" and record["new_classes"] == ["dim"]
    model = load_model(tmp_path / "model.onnx")
    assert model.class_names == record["class_names"] and len(model.class_names) == 8
    # The original never says "dim", so it gets every dim photo wrong.
    assert record["original"]["mean_error"] >= 0.45


def _fold_errors(by_key: dict[str, list[float]]) -> list[dict]:
    """Per-fold {Choice: error} from {choice key: [error per fold]}; unnamed choices 0.9."""
    folds = len(next(iter(by_key.values())))
    return [{c: by_key.get(c.key, [0.9] * folds)[i] for c in candidates()} for i in range(folds)]


def test_the_parent_stays_unless_the_best_beats_it_by_more_than_its_standard_error():
    # The best, whole-network training, is 0.06 better on average; the fold-by-fold excess
    # (0.10, 0.0, 0.12, 0.02) has a standard error of 0.029: beaten clearly.
    clear = _fold_errors(
        {"model:head:0": [0.40, 0.36, 0.42, 0.38], "photos:all:6": [0.30, 0.36, 0.30, 0.36],
         "photos:head:6": [0.34, 0.34, 0.30, 0.36]}
    )  # fmt: skip
    choice, means = best_choice(clear)
    # the best, not the simpler head within one standard error of it (excess 0.005, se 0.013)
    assert choice.key == "photos:all:6"
    assert means[PARENT] == pytest.approx(0.39)
    # Excess (0.08, -0.06, 0.02, -0.02): mean 0.005, standard error 0.0299: the parent stays.
    noisy = _fold_errors(
        {"model:head:0": [0.40, 0.30, 0.36, 0.34], "photos:all:6": [0.32, 0.36, 0.34, 0.36]}
    )
    assert best_choice(noisy)[0] == PARENT
    # The parent the best itself: kept.
    assert best_choice(_fold_errors({"model:head:0": [0.1, 0.1, 0.1]}))[0] == PARENT
