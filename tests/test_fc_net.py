import numpy as np
import pytest

from ferlab.nn import FullyConnectedNet
from ferlab.nn import fc_net as fc_net_module
from gradcheck import numeric_gradient, rel_error


@pytest.mark.parametrize("hidden_dims", [[], [7], [6, 5], [5, 4, 6]])
@pytest.mark.parametrize(("dropout", "reg"), [(0.0, 0.0), (0.3, 0.7)])
def test_whole_net_gradients_match_numeric(hidden_dims, dropout, reg):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((5, 8))
    y = rng.integers(0, 3, 5)
    model = FullyConnectedNet(8, hidden_dims, 3, dropout=dropout, reg=reg, dtype=np.float64, seed=0)
    # Non-zero biases keep pre-activations off ReLU's kink, where numeric derivatives are undefined.
    for name in model.params:
        if name.startswith("b"):
            model.params[name][...] = rng.uniform(0.1, 0.5, model.params[name].shape)

    def loss_with_fixed_mask(_=None):
        return model.loss(X, y, rng=np.random.default_rng(42))[0]

    _, grads = model.loss(X, y, rng=np.random.default_rng(42))
    assert set(grads) == set(model.params)
    for name, param in model.params.items():
        numeric = numeric_gradient(loss_with_fixed_mask, param)
        assert rel_error(grads[name], numeric) < 1e-6, name


def test_l2_term_is_half_reg_times_squared_weights():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((4, 3)), rng.integers(0, 2, 4)
    plain = FullyConnectedNet(3, [5], 2, dtype=np.float64, seed=1)
    regularised = FullyConnectedNet(3, [5], 2, reg=0.5, dtype=np.float64, seed=1)
    weights_sq = sum((plain.params[k] ** 2).sum() for k in ("W1", "W2"))
    assert regularised.loss(X, y)[0] == pytest.approx(plain.loss(X, y)[0] + 0.25 * weights_sq)


def test_he_initialisation_and_zero_biases():
    model = FullyConnectedNet(2000, [1000], 10, seed=0)
    assert model.params["W1"].dtype == np.float32
    assert model.params["W1"].std() == pytest.approx(np.sqrt(2 / 2000), rel=0.02)
    assert not model.params["b1"].any()
    small = FullyConnectedNet(2000, [1000], 10, weight_scale=1e-3, seed=0)
    assert small.params["W1"].std() == pytest.approx(1e-3, rel=0.02)


def test_same_seed_gives_same_weights():
    a, b = FullyConnectedNet(10, [4], 3, seed=5), FullyConnectedNet(10, [4], 3, seed=5)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])


def test_scores_in_test_mode_ignore_dropout():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 4))
    model = FullyConnectedNet(4, [50], 3, dropout=0.9, seed=0)
    np.testing.assert_array_equal(model.loss(X), model.loss(X))


def test_predict_in_batches_matches_one_pass(monkeypatch):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((25, 4)).astype(np.float32)
    model = FullyConnectedNet(4, [8], 3, seed=0)
    one_pass = model.loss(X)
    monkeypatch.setattr(fc_net_module, "PREDICT_BATCH", 7)
    np.testing.assert_allclose(model.scores(X), one_pass, rtol=1e-6)
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(model.predict(X), one_pass.argmax(axis=1))


def test_frozen_layers_get_no_input_gradient_work():
    model = FullyConnectedNet(4, [3, 3], 2, seed=0)
    for name in ("W1", "b1", "W2", "b2"):
        model.trainable[name] = False
    assert not model.needs_dX(3)
    model.trainable["b2"] = True
    assert model.needs_dX(3) and not model.needs_dX(2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input_dim": 0, "hidden_dims": [3], "num_classes": 2},
        {"input_dim": 4, "hidden_dims": [0], "num_classes": 2},
        {"input_dim": 4, "hidden_dims": [3], "num_classes": 1},
        {"input_dim": 4, "hidden_dims": [3], "num_classes": 2, "dropout": 1.0},
        {"input_dim": 4, "hidden_dims": [3], "num_classes": 2, "reg": -1.0},
    ],
)
def test_bad_architecture_is_rejected(kwargs):
    with pytest.raises(ValueError):
        FullyConnectedNet(**kwargs)
