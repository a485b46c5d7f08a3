"""ferlab compare: paired tests on cross-validation folds, learners from configs, clear errors."""

import json

import numpy as np
import pytest

from ferlab.cli import main
from ferlab.compare import cv_folds, load_learner, paired_tests, run_compare
from ferlab.data import DATASETS, DatasetSpec, LabeledImages
from ferlab.errors import ConfigError, DataError

SYNTHETIC_CLASSES = ["angry", "disgust", "happy"]


def load_synthetic(path=None, *, strict=False, use_cache=True) -> LabeledImages:
    """Three easy classes of 6x6 uint8 images: a class-specific bright patch plus noise."""
    rng = np.random.default_rng(0)
    per_class = {"train": 120, "test": 40}
    images, labels, splits = [], [], []
    for split, count in per_class.items():
        for label in range(len(SYNTHETIC_CLASSES)):
            base = np.full((count, 6, 6), 60.0)
            base[:, 2 * label : 2 * label + 2, :] += 80
            noisy = base + rng.normal(0, 40, base.shape)
            images.append(np.clip(noisy, 0, 255).astype(np.uint8))
            labels += [label] * count
            splits += [split] * count
    return LabeledImages(
        np.concatenate(images), np.array(labels), SYNTHETIC_CLASSES, np.array(splits)
    )


@pytest.fixture
def synthetic(monkeypatch):
    """Register the synthetic data set under the name ``synthetic``."""
    spec = DatasetSpec("test_compare:load_synthetic", "train", ("test",), (6, 6))
    monkeypatch.setitem(DATASETS, "synthetic", spec)
    return "synthetic"


FC_CONFIG = """
seed = 0
[data]
dataset = "synthetic"
path = "generated"
val_size = 0.2
[model]
hidden_dims = [16]
[solver]
optimizer = "adam"
lr = 5e-3
batch_size = 32
epochs = 4
"""

WEAK_TREE = """
[data]
dataset = "synthetic"
path = "generated"
[baseline]
kind = "decision_tree"
[baseline.params]
max_depth = 1
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_paired_tests_find_a_real_difference():
    rng = np.random.default_rng(1)
    b = rng.uniform(0.2, 0.3, 10)
    a = b + 0.05 + rng.normal(0, 0.01, 10)
    tests = paired_tests(a, b, n_train=900, n_test=100)
    for name in ("paired_t", "corrected_resampled_t", "wilcoxon"):
        assert tests[name]["p_value"] < 0.01, name
    # The correction widens the variance, so it is never more confident than the plain t-test.
    assert tests["corrected_resampled_t"]["p_value"] > tests["paired_t"]["p_value"]


def test_corrected_t_matches_the_nadeau_bengio_formula():
    from scipy import stats

    a = np.array([0.30, 0.28, 0.35, 0.31, 0.29, 0.33])
    b = np.array([0.25, 0.27, 0.30, 0.26, 0.28, 0.27])
    d = a - b
    t = d.mean() / np.sqrt((1 / 6 + 200 / 1000) * d.var(ddof=1))
    result = paired_tests(a, b, n_train=1000, n_test=200)["corrected_resampled_t"]
    assert result["statistic"] == pytest.approx(t)
    assert result["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), 5))


def test_identical_errors_give_p_one_without_crashing():
    errors = np.array([0.2, 0.25, 0.22, 0.3])
    tests = paired_tests(errors, errors.copy(), n_train=300, n_test=100)
    assert all(test["p_value"] == 1.0 for test in tests.values())


def test_constant_nonzero_difference_is_decisive():
    a = np.array([0.3, 0.4, 0.5])
    tests = paired_tests(a, a - 0.1, n_train=200, n_test=100)
    assert tests["paired_t"]["p_value"] == 0.0
    assert tests["corrected_resampled_t"]["p_value"] == 0.0


def test_identical_learners_show_no_difference(tmp_path, synthetic):
    config = write(tmp_path, "fc.toml", FC_CONFIG)
    record = run_compare(load_learner(config), load_learner(config), folds=3, seed=0, verbose=False)
    a, b = record["learners"]["a"], record["learners"]["b"]
    assert a["errors"] == b["errors"]
    assert b["name"] != a["name"]
    assert all(test["p_value"] == 1.0 for test in record["tests"].values())
    assert "does not find a significant difference" in record["verdict"]


def test_net_beats_a_stump_on_the_same_folds(tmp_path, synthetic):
    out = tmp_path / "out"
    record = run_compare(
        load_learner(write(tmp_path, "fc.toml", FC_CONFIG)),
        load_learner(write(tmp_path, "stump.toml", WEAK_TREE)),
        folds=4,
        repeats=2,
        seed=3,
        out_dir=out,
        verbose=False,
    )
    a, b = record["learners"]["a"], record["learners"]["b"]
    assert len(a["errors"]) == len(b["errors"]) == 8
    assert np.mean(a["errors"]) < 0.15 < np.mean(b["errors"])  # a depth-1 tree cannot split 3 ways
    assert record["tests"]["corrected_resampled_t"]["p_value"] < 0.05
    assert "fc had the lower error" in record["verdict"]
    assert "no claim that either learner is better in general" in record["verdict"]
    assert a["size"]["parameters"] == 36 * 16 + 16 + 16 * 3 + 3
    assert b["size"]["parameters"] > 0 and a["mean_seconds"] > 0
    saved = json.loads((out / "compare.json").read_text())
    assert saved["tests"] == record["tests"]
    assert [row["repeat"] for row in saved["fold_results"]] == [0] * 4 + [1] * 4
    assert (out / "fold_errors.png").stat().st_size > 1000


def test_folds_are_stratified_seeded_and_cover_the_training_split():
    labels = np.repeat([0, 1, 2], 30)
    folds = cv_folds(labels, 5, 2, seed=7)
    assert folds[0][2].tolist() == cv_folds(labels, 5, 2, seed=7)[0][2].tolist()
    for repeat in (0, 1):
        tests = np.concatenate([f[3] for f in folds if f[0] == repeat])
        assert sorted(tests.tolist()) == list(range(90))
    assert all(np.bincount(labels[f[3]]).tolist() == [6, 6, 6] for f in folds)


def test_bad_input_gives_clear_errors(tmp_path, synthetic):
    labels = np.repeat([0, 1], 10)
    with pytest.raises(ConfigError, match="at least 2"):
        cv_folds(labels, 1, 1, seed=0)
    with pytest.raises(DataError, match="fewer than 20 folds"):
        cv_folds(labels, 20, 1, seed=0)
    bad_kind = write(tmp_path, "k.toml", WEAK_TREE.replace("decision_tree", "svm"))
    with pytest.raises(ConfigError, match="config key 'baseline.kind' must be .*got 'svm'"):
        load_learner(bad_kind)
    bad_param = write(tmp_path, "p.toml", WEAK_TREE.replace("max_depth", "depth"))
    with pytest.raises(ConfigError, match=r"\['depth'\] not parameters of DecisionTreeClassifier"):
        load_learner(bad_param)
    other_data = write(tmp_path, "d.toml", WEAK_TREE.replace('"synthetic"', '"digits"'))
    fc = write(tmp_path, "fc.toml", FC_CONFIG)
    with pytest.raises(ConfigError, match="different data.dataset"):
        run_compare(load_learner(fc), load_learner(other_data), folds=2, verbose=False)


def test_cli_reports_one_line_errors(tmp_path, synthetic, capsys):
    fc = write(tmp_path, "fc.toml", FC_CONFIG)
    assert main(["compare", str(fc), str(fc), "--folds", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ferlab: error: --folds must be at least 2, got 1"]
    assert main(["compare", str(fc), str(tmp_path / "missing.toml")]) == 2
    assert "no such config file" in capsys.readouterr().err


def load_synthetic48(path=None, *, strict=False, use_cache=True) -> LabeledImages:
    """The synthetic classes at 48x48 (the CNN's input size): bright horizontal bands."""
    small = load_synthetic()
    images = np.repeat(np.repeat(small.images, 8, axis=1), 8, axis=2)
    return LabeledImages(images, small.labels, small.class_names, small.splits)


@pytest.fixture
def synthetic48(monkeypatch):
    """Register the 48x48 synthetic data set under the name ``synthetic48``."""
    spec = DatasetSpec("test_compare:load_synthetic48", "train", ("test",), (48, 48))
    monkeypatch.setitem(DATASETS, "synthetic48", spec)
    return "synthetic48"


TINY_CNN = """
seed = 0
[data]
dataset = "synthetic48"
path = "generated"
val_size = 0.2
[model]
widths = [4, 8]
convs = [1, 1]
[solver]
optimizer = "adamw"
lr = 1e-2
batch_size = 32
epochs = 2
[device]
device = "cpu"
threads = 1
"""


@pytest.mark.torch
def test_a_cnn_config_is_a_learner(tmp_path, synthetic48):
    pytest.importorskip("torch")
    cnn = load_learner(write(tmp_path, "cnn.toml", TINY_CNN))
    stump = load_learner(write(tmp_path, "s.toml", WEAK_TREE.replace("synthetic", "synthetic48")))
    assert cnn.kind == "cnn" and stump.kind == "baseline"
    record = run_compare(cnn, stump, folds=2, seed=0, verbose=False)
    learner = record["learners"]["a"]
    assert len(learner["errors"]) == 2 and all(0 <= e <= 1 for e in learner["errors"])
    assert learner["size"]["parameters"] == 4 * 9 + 8 + 8 * 4 * 9 + 16 + 8 * 3 + 3


def test_train_limit_draws_the_subset_train_draws(tmp_path, synthetic):
    # compare and train subset data.train_limit with one algorithm (a stratified, seeded draw),
    # so one config trains on the same kind of data under both commands.
    from ferlab.compare import training_data
    from ferlab.data.split import stratified_subset

    config = write(
        tmp_path, "fc.toml", FC_CONFIG.replace("val_size = 0.2", "val_size = 0.2\ntrain_limit = 90")
    )
    learner = load_learner(config)
    train, _ = training_data(learner, learner, strict=False, use_cache=False)
    full = load_synthetic().split("train")
    expected = np.sort(stratified_subset(np.arange(len(full)), full.labels, 90, 0))
    assert len(train) == 90
    assert np.array_equal(train.images, full.images[expected])
    assert np.bincount(train.labels).tolist() == [30, 30, 30]  # the class shares kept
