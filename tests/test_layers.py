import numpy as np
import pytest

from ferlab.nn import (
    dropout_backward,
    dropout_forward,
    linear_backward,
    linear_forward,
    relu_backward,
    relu_forward,
    softmax_loss,
)
from gradcheck import numeric_gradient, rel_error

TOL = 1e-6


@pytest.fixture
def rng():
    return np.random.default_rng(1)


def test_linear_forward_matches_definition(rng):
    X = rng.standard_normal((4, 2, 3))
    W = rng.standard_normal((6, 5))
    b = rng.standard_normal(5)
    out, _ = linear_forward(X, W, b)
    np.testing.assert_allclose(out, X.reshape(4, 6) @ W + b)


def test_linear_backward_gradients(rng):
    X = rng.standard_normal((4, 2, 3))
    W = rng.standard_normal((6, 5))
    b = rng.standard_normal(5)
    dout = rng.standard_normal((4, 5))
    _, cache = linear_forward(X, W, b)
    dX, dW, db = linear_backward(dout, cache)
    assert dX.shape == X.shape
    assert rel_error(dX, numeric_gradient(lambda x: linear_forward(x, W, b)[0], X, dout)) < TOL
    assert rel_error(dW, numeric_gradient(lambda w: linear_forward(X, w, b)[0], W, dout)) < TOL
    assert rel_error(db, numeric_gradient(lambda v: linear_forward(X, W, v)[0], b, dout)) < TOL


def test_linear_backward_can_skip_input_gradient(rng):
    X, W, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), np.zeros(2)
    _, cache = linear_forward(X, W, b)
    dX, dW, _ = linear_backward(np.ones((3, 2)), cache, need_dX=False)
    assert dX is None
    np.testing.assert_allclose(dW, X.T @ np.ones((3, 2)))


def test_relu_forward_and_gradient(rng):
    # Keep inputs away from the kink at 0, where the numeric derivative is undefined.
    X = rng.standard_normal((5, 7))
    X[np.abs(X) < 1e-3] = 0.5
    out, cache = relu_forward(X)
    np.testing.assert_array_equal(out, np.maximum(X, 0))
    dout = rng.standard_normal(X.shape)
    dX = relu_backward(dout, cache)
    assert rel_error(dX, numeric_gradient(lambda x: relu_forward(x)[0], X, dout)) < TOL


def test_softmax_loss_value_and_gradient(rng):
    scores = rng.standard_normal((6, 4))
    y = rng.integers(0, 4, 6)
    loss, dscores = softmax_loss(scores, y)
    probs = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.log(probs[np.arange(6), y]).mean())
    numeric = numeric_gradient(lambda s: softmax_loss(s, y)[0], scores)
    assert rel_error(dscores, numeric) < TOL


def test_softmax_loss_is_stable_for_huge_scores():
    scores = np.array([[1e30, -1e30, 0.0], [5e4, 5e4, -5e4]], dtype=np.float32)
    loss, dscores = softmax_loss(scores, np.array([1, 0]))
    assert np.isfinite(loss) and np.all(np.isfinite(dscores))
    assert loss == pytest.approx((2e30 + np.log(2)) / 2, rel=1e-6)


def test_softmax_loss_of_random_scores_is_about_log_c(rng):
    loss, _ = softmax_loss(rng.standard_normal((2000, 10)) * 1e-3, rng.integers(0, 10, 2000))
    assert loss == pytest.approx(np.log(10), rel=1e-3)


def test_dropout_backward_reuses_forward_mask(rng):
    X = rng.standard_normal((50, 40))
    out, cache = dropout_forward(X, 0.3, True, np.random.default_rng(7))
    dout = rng.standard_normal(X.shape)
    dX = dropout_backward(dout, cache)
    dropped = out == 0
    assert dropped.any()
    np.testing.assert_array_equal(dX[dropped], 0)
    np.testing.assert_allclose(dX[~dropped], dout[~dropped] / 0.7)
    numeric = numeric_gradient(
        lambda x: dropout_forward(x, 0.3, True, np.random.default_rng(7))[0], X.copy(), dout
    )
    assert rel_error(dX, numeric) < TOL


def test_dropout_preserves_mean_in_expectation():
    X = np.ones((2000, 500))
    out, _ = dropout_forward(X, 0.4, True, np.random.default_rng(0))
    assert out.mean() == pytest.approx(1.0, abs=0.01)
    assert (out == 0).mean() == pytest.approx(0.4, abs=0.01)


def test_dropout_is_identity_at_test_time_and_for_p_zero(rng):
    X = rng.standard_normal((10, 10))
    for p, train in ((0.5, False), (0.0, True)):
        out, cache = dropout_forward(X, p, train, rng)
        np.testing.assert_array_equal(out, X)
        np.testing.assert_array_equal(dropout_backward(X, cache), X)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_rejects_bad_probability(p):
    with pytest.raises(ValueError, match="dropout"):
        dropout_forward(np.ones((2, 2)), p, True)
