"""ferlab extend: grow the output layer, freeze or fine-tune, remap labels by class name."""

import json

import numpy as np
import pytest

from ferlab.cli import main
from ferlab.errors import ConfigError, DataError, ModelFileError
from ferlab.nn import FullyConnectedNet
from ferlab.nn.model_io import load_fully_connected
from ferlab.runs.extend import extend_model, grow_fully_connected, relabel
from ferlab.runs.fc import run_training
from ferlab.settings import ExtendSettings, validate_options
from ferlab.settings.loading import load_config
from test_compare import SYNTHETIC_CLASSES, synthetic, synthetic48  # noqa: F401 (fixtures)

CONFIG = """
seed = 0
[data]
dataset = "synthetic"
path = "generated"
val_size = 0.2
exclude_classes = ["disgust"]
[model]
hidden_dims = [16, 12]
[solver]
optimizer = "adam"
lr = 5e-3
batch_size = 32
epochs = 6
"""
FAST = ExtendSettings(epochs=8, lr=1e-2, batch_size=32, patience=None)


@pytest.fixture
def old_model(tmp_path, synthetic):  # noqa: F811
    """A two-layer net trained on the synthetic data without 'disgust' (the middle class)."""
    path = tmp_path / "old.toml"
    path.write_text(CONFIG)
    run_training(load_config(path), tmp_path / "run", verbose=False)
    return tmp_path / "run" / "model.npz"


def test_growing_keeps_the_old_logits_and_adds_zero_outputs():
    model = FullyConnectedNet(10, [7], 3, seed=1)
    model.class_names = ["a", "b", "c"]
    model.params["b2"][:] = [0.1, -0.2, 0.3]
    X = np.random.default_rng(0).normal(size=(5, 10)).astype(np.float32)
    grown = grow_fully_connected(model, ["d", "e"])
    scores = grown.scores(X)
    assert grown.class_names == ["a", "b", "c", "d", "e"] and grown.num_classes == 5
    np.testing.assert_array_equal(scores[:, :3], model.scores(X))
    np.testing.assert_array_equal(scores[:, 3:], 0)
    np.testing.assert_array_equal(grown.params["W1"], model.params["W1"])


def test_relabel_maps_labels_by_class_name():
    from ferlab.data import LabeledImages

    data = LabeledImages(
        np.zeros((4, 2, 2), np.uint8), [0, 1, 2, 1], ["angry", "disgust", "happy"], ["t"] * 4
    )
    part = relabel(data, ["angry", "happy", "disgust"])
    assert part.labels.tolist() == [0, 2, 1, 2]
    part = relabel(data, ["happy", "angry"])
    assert part.labels.tolist() == [1, 0] and part.class_names == ["happy", "angry"]


def test_oversampling_balances_classes_reproducibly():
    from ferlab.data import LabeledImages
    from ferlab.runs.extend import oversample

    labels = np.array([0] * 10 + [1] * 3 + [3] * 1)
    data = LabeledImages(np.arange(14).reshape(14, 1, 1), labels, list("abcd"), ["t"] * 14)
    balanced = oversample(data, seed=1)
    assert np.bincount(balanced.labels).tolist() == [10, 10, 0, 10]
    assert set(balanced.images.ravel()) == set(range(14))  # every original sample is kept
    assert balanced.labels.tolist() == oversample(data, seed=1).labels.tolist()
    # Images hold their original index, so each row's label must be its source's label.
    assert (labels[balanced.images.ravel()] == balanced.labels).all()


def test_model_trained_without_a_class_has_remapped_names(old_model):
    model = load_fully_connected(old_model)
    assert model.class_names == ["angry", "happy"]
    assert model.training_info["data"]["exclude_classes"] == ["disgust"]


def test_all_but_last_leaves_frozen_layers_bit_identical(old_model, tmp_path):
    report = extend_model(
        old_model, "generated", ["disgust"], tmp_path / "grown", FAST, verbose=False
    )
    out = tmp_path / "grown" / "model.npz"
    assert report["out"] == str(out)
    old, new = load_fully_connected(old_model), load_fully_connected(out)
    assert new.class_names == ["angry", "happy", "disgust"]
    for name in ("W1", "b1", "W2", "b2"):
        assert np.array_equal(new.params[name], old.params[name]), name
    assert not np.array_equal(new.params["W3"][:, :2], old.params["W3"])
    assert report["trainable_parameters"]["trained"] == 12 * 3 + 3
    # On this easy data the new class is learnt and the old ones are kept.
    assert report["after"]["new_class_recall"]["disgust"] > 0.8
    assert report["before"]["old_class_accuracy"] > 0.9
    assert report["after"]["old_class_accuracy"] > 0.85
    assert report["before"]["n_old"] == report["after"]["n_old"] == 80
    saved = json.loads((tmp_path / "grown" / "extend.json").read_text())
    assert saved["after"] == report["after"] and saved["freeze"] == "all-but-last"


def test_none_fine_tunes_every_layer(old_model, tmp_path):
    settings = FAST.model_copy(update={"freeze": "none"})
    report = extend_model(old_model, "generated", ["disgust"], tmp_path, settings, verbose=False)
    old, new = load_fully_connected(old_model), load_fully_connected(tmp_path / "model.npz")
    assert not np.array_equal(new.params["W1"], old.params["W1"])
    assert report["trainable_parameters"]["trained"] == report["trainable_parameters"]["total"]
    assert report["after"]["new_class_recall"]["disgust"] > 0.8


def test_bad_input_gives_clear_errors(old_model, tmp_path):
    out = tmp_path / "x"
    with pytest.raises(DataError, match=r"unknown class name\(s\) \['contempt'\]"):
        extend_model(old_model, "generated", ["contempt"], out, FAST, verbose=False)
    with pytest.raises(ConfigError, match="already has class"):
        extend_model(old_model, "generated", ["happy"], out, FAST, verbose=False)
    with pytest.raises(ConfigError, match="--freeze must be 'all-but-last' or 'none', got 'first'"):
        validate_options(ExtendSettings, freeze="first")
    with pytest.raises(ConfigError, match="--batch-size must be greater than or equal to 1"):
        validate_options(ExtendSettings, batch_size=0)
    model = load_fully_connected(old_model)
    del model.params["W3"]
    with pytest.raises(ModelFileError, match="no output layer W3"):
        grow_fully_connected(model, ["disgust"])
    assert not out.exists()


def test_cli_extends_and_reports(old_model, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["extend", "--model", str(old_model), "--new-classes", "disgust", "--out", str(out)]
    args += ["--data", "g"]
    assert main([*args, "--epochs", "3", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "old-class accuracy on test: before" in printed and "'disgust' recall" in printed
    assert (out / "model.npz").is_file() and (out / "extend.json").is_file()
    assert main([*args, "--epochs", "3", "--quiet"]) == 2  # the folder is not empty now
    assert "use --force" in capsys.readouterr().err
    assert main([*args[:4], "nope", *args[5:], "--force"]) == 2
    assert capsys.readouterr().err.startswith("ferlab: error: unknown class name(s) ['nope']")
    assert main(["extend", "--model", str(tmp_path / "missing.npz"), *args[3:], "--force"]) == 2
    assert "no such model file" in capsys.readouterr().err
    assert SYNTHETIC_CLASSES[1] == "disgust"


def save_tiny_cnn(path, class_names, dataset="synthetic48"):
    """An untrained tiny CNN file that records the synthetic training data."""
    from ferlab.deep import build_cnn, save_cnn
    from ferlab.deep.io import model_meta
    from ferlab.deep.model import architecture_from_config
    from ferlab.settings import CNNModelSettings

    config = CNNModelSettings(widths=[4, 8], convs=[1, 1], dropout=0.0, head_dropout=0.0)
    architecture = architecture_from_config(config, len(class_names))
    module = build_cnn(architecture)
    data = {"dataset": dataset, "val_size": 0.2, "train_limit": None, "exclude_classes": []}
    meta = model_meta(architecture, class_names, 90.0, 50.0, 44, {"data": data, "seed": 0})
    save_cnn(module, meta, path)
    return path


@pytest.mark.torch
def test_growing_a_cnn_head_keeps_old_logits_and_needs_the_layer():
    torch = pytest.importorskip("torch")
    from ferlab.deep.model import FerCNN
    from ferlab.runs.extend import grow_linear_head

    torch.manual_seed(0)
    module = FerCNN(2, [4, 8], [1, 1]).eval()
    x = torch.randn(3, 1, 44, 44)
    with torch.no_grad():
        before = module(x)
        grow_linear_head(module, 2)
        after = module(x)
    assert after.shape == (3, 4)
    torch.testing.assert_close(after[:, :2], before, rtol=0, atol=1e-6)
    assert torch.equal(after[:, 2:], torch.zeros(3, 2))
    del module.head
    with pytest.raises(ModelFileError, match="no linear output layer named 'head'"):
        grow_linear_head(module, 1)


@pytest.mark.torch
@pytest.mark.parametrize("freeze", ["all-but-last", "none"])
def test_extending_a_cnn_freezes_everything_but_the_head(tmp_path, synthetic48, freeze):  # noqa: F811
    pytest.importorskip("torch")
    from ferlab.deep import load_cnn

    old_path = save_tiny_cnn(tmp_path / "old.safetensors", ["angry", "happy"])
    settings = ExtendSettings(freeze=freeze, optimizer="adamw", epochs=2, batch_size=32)
    report = extend_model(
        old_path, "generated", ["disgust"], tmp_path / "new", settings, verbose=False
    )
    old, new = load_cnn(old_path), load_cnn(tmp_path / "new" / "model.safetensors")
    assert new.class_names == ["angry", "happy", "disgust"]
    old_state, new_state = old.module.state_dict(), new.module.state_dict()
    body = [name for name in old_state if not name.startswith("head.")]
    identical = [name for name in body if torch_equal(old_state[name], new_state[name])]
    if freeze == "all-but-last":
        assert identical == body  # weights and batch-norm statistics alike
        assert report["trainable_parameters"]["trained"] == 8 * 3 + 3
    else:
        assert not torch_equal(old_state["features.0.weight"], new_state["features.0.weight"])
    assert not torch_equal(old_state["head.weight"], new_state["head.weight"][:2])
    assert report["kind"] == "cnn" and set(report["after"]["new_class_recall"]) == {"disgust"}


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))
