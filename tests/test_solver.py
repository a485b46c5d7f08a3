import numpy as np
import pytest

from ferlab.errors import DataError, TrainingDiverged
from ferlab.nn import FullyConnectedNet, Solver
from ferlab.nn.solver import CHECKPOINT_NAME, random_shift


def blobs(n=200, d=12, classes=3, seed=0, noise=0.5):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, d)) * 2
    y = rng.integers(0, classes, n)
    return (centres[y] + noise * rng.standard_normal((n, d))).astype(np.float32), y


def split(X, y, n_train):
    return {
        "X_train": X[:n_train],
        "y_train": y[:n_train],
        "X_val": X[n_train:],
        "y_val": y[n_train:],
    }


def test_overfits_a_tiny_data_set():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 30)).astype(np.float32), rng.integers(0, 5, 60)
    model = FullyConnectedNet(30, [100], 5, seed=0)
    solver = Solver(
        model, split(X, y, 50), optimizer="adam", lr=1e-2, batch_size=10, epochs=30, verbose=False
    )
    history = solver.train()
    assert history["train_acc"][-1] == 1.0
    assert (model.predict(X[:50]) == y[:50]).all()


def test_learns_separable_blobs_and_history_is_complete():
    X, y = blobs()
    model = FullyConnectedNet(12, [20], 3, seed=0)
    solver = Solver(
        model, split(X, y, 150), lr=0.05, lr_decay=0.9, epochs=5, batch_size=32, verbose=False
    )
    history = solver.train()
    assert set(history) == {
        "train_loss", "train_l2", "train_acc", "val_loss", "val_acc", "lr", "seconds"
    }  # fmt: skip
    assert history["train_l2"] == [0.0] * len(history["train_loss"])  # reg = 0: no L2 term
    assert all(len(v) == 5 for v in history.values())
    assert history["val_acc"][-1] > 0.9
    assert history["train_loss"][-1] < history["train_loss"][0]
    np.testing.assert_allclose(history["lr"], 0.05 * 0.9 ** np.arange(5))


@pytest.mark.parametrize("monitor", ["val_loss", "val_acc"])
def test_early_stopping_stops_at_patience_and_restores_best(monitor):
    rng = np.random.default_rng(1)
    # Random labels: the net memorises training data while validation loss gets worse.
    X, y = rng.standard_normal((80, 20)).astype(np.float32), rng.integers(0, 4, 80)
    model = FullyConnectedNet(20, [200], 4, seed=0)
    snapshots = {}

    def snapshot(epoch, history):
        snapshots[epoch] = {k: v.copy() for k, v in model.params.items()}

    solver = Solver(
        model, split(X, y, 40), optimizer="adam", lr=3e-3, batch_size=10, epochs=60,
        patience=3, verbose=False, epoch_callback=snapshot, monitor=monitor,
    )  # fmt: skip
    history = solver.train()
    if monitor == "val_loss":
        best_epoch = int(np.argmin(history["val_loss"])) + 1
    else:
        best_epoch = int(np.argmax(history["val_acc"])) + 1
    assert solver.stopped_early
    assert len(history["val_loss"]) == best_epoch + 3
    assert solver.best_epoch == best_epoch
    for name, value in model.params.items():
        np.testing.assert_array_equal(value, snapshots[best_epoch][name])


def _resumable_solver(data, checkpoint_dir=None, callback=None):
    model = FullyConnectedNet(12, [16, 8], 3, dropout=0.2, reg=1e-3, seed=3)
    return Solver(
        model, data, optimizer="nesterov", lr=0.02, lr_decay=0.95, batch_size=16, epochs=6,
        seed=11, checkpoint_dir=checkpoint_dir, verbose=False, epoch_callback=callback,
        image_shape=(3, 4), flip=True, shift=1,
    )  # fmt: skip


def test_resume_from_mid_run_checkpoint_is_bit_identical(tmp_path, capsys):
    X, y = blobs()
    data = split(X, y, 150)
    uninterrupted = _resumable_solver(data)
    uninterrupted.train()

    def interrupt(epoch, history):
        if epoch == 3:
            raise KeyboardInterrupt

    interrupted = _resumable_solver(data, tmp_path, interrupt)
    with pytest.raises(KeyboardInterrupt):
        interrupted.train()
    assert "resume" in capsys.readouterr().err
    resumed = _resumable_solver(data, tmp_path)
    resumed.resume(tmp_path / CHECKPOINT_NAME)
    assert resumed.epoch == 6
    for name, value in uninterrupted.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[name], value)
    for key in ("train_loss", "val_loss", "val_acc", "lr"):
        assert resumed.history[key] == uninterrupted.history[key]


def test_unknown_monitor_is_rejected():
    X, y = blobs()
    with pytest.raises(ValueError, match="monitor"):
        Solver(FullyConnectedNet(12, [4], 3), split(X, y, 150), monitor="train_loss")


def test_diverging_loss_names_the_epoch():
    X, y = blobs()
    model = FullyConnectedNet(12, [20], 3, seed=0)
    solver = Solver(model, split(X * 1e4, y, 150), optimizer="sgd", lr=1e8, epochs=3, verbose=False)
    with pytest.raises(TrainingDiverged, match=r"epoch \d+; try a lower learning rate"):
        solver.train()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(y_train=d["y_train"][:-1]), "rows but y_train has"),
        (lambda d: d.update(y_val=d["y_val"] + 5), "outside"),
        (lambda d: d.update(X_train=d["X_train"][:, :5]), "features"),
        (lambda d: d.update(X_val=d["X_val"][:0], y_val=d["y_val"][:0]), "empty"),
        (lambda d: d.update(y_train=d["y_train"].astype(float)), "integer"),
        (lambda d: d.pop("X_val"), "X_val"),
    ],
)
def test_inconsistent_data_is_rejected_up_front(mutate, message):
    X, y = blobs()
    data = split(X, y, 150)
    mutate(data)
    with pytest.raises(DataError, match=message):
        Solver(FullyConnectedNet(12, [4], 3), data, verbose=False)


def test_frozen_parameters_do_not_change():
    X, y = blobs()
    model = FullyConnectedNet(12, [10], 3, seed=0)
    model.trainable.update(W1=False, b1=False)
    before = model.params["W1"].copy()
    Solver(model, split(X, y, 150), epochs=2, verbose=False).train()
    np.testing.assert_array_equal(model.params["W1"], before)


@pytest.mark.parametrize("channels", [None, 3])
def test_random_shift_moves_each_image_within_bounds(channels):
    rng = np.random.default_rng(0)
    shape = (5, 6, 7) if channels is None else (5, 6, 7, channels)
    images = rng.standard_normal(shape) + 10  # never zero, so zero marks filled pixels
    shifted = random_shift(images, 2, np.random.default_rng(1))
    assert shifted.shape == images.shape
    for original, moved in zip(images, shifted, strict=True):
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if np.array_equal(
                moved[max(dy, 0) : 6 + min(dy, 0), max(dx, 0) : 7 + min(dx, 0)],
                original[max(-dy, 0) : 6 + min(-dy, 0), max(-dx, 0) : 7 + min(-dx, 0)],
            )
        ]
        assert len(matches) == 1
        dy, dx = matches[0]
        assert np.count_nonzero(moved == 0) == moved.size - (6 - abs(dy)) * (7 - abs(dx)) * (
            1 if channels is None else channels
        )


def test_flip_mirrors_images_and_keeps_labels():
    X = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 12) + 1
    y = np.array([0, 1])
    solver = Solver(
        FullyConnectedNet(12, [], 2), split(np.vstack([X, X]), np.hstack([y, y]), 2),
        image_shape=(3, 4), flip=True, verbose=False,
    )  # fmt: skip
    batch = X.copy()
    solver.rng = np.random.default_rng(0)
    flip_mask = np.random.default_rng(0).random(2) < 0.5
    assert flip_mask.tolist() == [False, True]  # one image mirrored, one left alone
    solver.augment(batch)
    expected = np.where(flip_mask[:, None], X.reshape(2, 3, 4)[:, :, ::-1].reshape(2, 12), X)
    np.testing.assert_array_equal(batch, expected)


def test_augmentation_needs_an_image_shape():
    X, y = blobs()
    with pytest.raises(ValueError, match="image_shape"):
        Solver(FullyConnectedNet(12, [4], 3), split(X, y, 150), flip=True)


def test_the_l2_term_is_recorded_apart_from_the_data_loss():
    X, y = blobs()
    model = FullyConnectedNet(12, [20], 3, reg=0.5, seed=0)
    expected = 0.5 * 0.5 * sum(float((model.params[w] ** 2).sum()) for w in ("W1", "W2"))
    # A step too small to move the weights: the L2 term is the same in every batch.
    solver = Solver(model, split(X, y, 150), lr=1e-12, epochs=1, batch_size=32, verbose=False)
    history = solver.train()
    assert history["train_l2"][0] == pytest.approx(expected, rel=1e-6)
    data_loss = history["train_loss"][0] - history["train_l2"][0]
    full_batch_loss, _ = solver.evaluate(solver.X_train, solver.y_train)  # no dropout: the same
    assert data_loss == pytest.approx(full_batch_loss, rel=1e-5)
