import numpy as np
import pytest

from ferlab.nn.optim import get_update_rule

torch = pytest.importorskip("torch")

TORCH_EQUIVALENT = {
    "sgd": lambda p, lr: torch.optim.SGD(p, lr=lr),
    "sgd_momentum": lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9),
    "nesterov": lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9, nesterov=True),
    "adam": lambda p, lr: torch.optim.Adam(p, lr=lr),
}


@pytest.mark.parametrize("name", sorted(TORCH_EQUIVALENT))
def test_update_rule_matches_pytorch_trajectory(name):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3))
    grads = [rng.standard_normal((4, 3)) for _ in range(6)]
    update = get_update_rule(name)
    state, config = {}, {"lr": 0.05, "momentum": 0.9}
    tw = torch.tensor(w.copy(), requires_grad=True)
    opt = TORCH_EQUIVALENT[name]([tw], 0.05)
    for g in grads:
        w = update(w, g, state, config)
        tw.grad = torch.tensor(g)
        opt.step()
    np.testing.assert_allclose(w, tw.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(TORCH_EQUIVALENT))
def test_update_rule_minimises_a_quadratic(name):
    target = np.array([1.0, -2.0, 3.0])
    w = np.zeros(3)
    update, state, config = get_update_rule(name), {}, {"lr": 0.05, "momentum": 0.9}
    for _ in range(2000):
        w = update(w, 2 * (w - target), state, config)
    np.testing.assert_allclose(w, target, atol=1e-3)


def test_update_is_in_place_and_keeps_dtype():
    w = np.ones(3, dtype=np.float32)
    out = get_update_rule("adam")(w, np.ones(3, dtype=np.float32), {}, {"lr": 0.1})
    assert out is w and w.dtype == np.float32


def test_unknown_rule_is_named_in_the_error():
    with pytest.raises(ValueError, match="rmsprop"):
        get_update_rule("rmsprop")
