"""One rebuild of a model's data split from its file's record (evaluate, extend, photos)."""

import numpy as np
import pytest

from ferlab.data.images import LabeledImages
from ferlab.data.split import DEFAULT_VAL_SIZE, recorded_splits, split_images
from ferlab.errors import ModelFileError

CLASSES = ["angry", "happy", "sad"]


def fer_like(n_train=90, n_test=12):
    """A tiny FER2013-shaped data set: 'training' and both test splits, three classes."""
    rng = np.random.default_rng(0)
    splits = ["training"] * n_train + ["public_test"] * n_test + ["private_test"] * n_test
    n = len(splits)
    images = rng.integers(0, 256, (n, 4, 4), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n) % 256  # each image told apart by its first pixel
    return LabeledImages(images, np.arange(n) % 3, CLASSES, np.array(splits))


def test_a_recorded_hold_out_is_rebuilt_exactly():
    data = fer_like()
    info = {"seed": 7, "data": {"dataset": "fer2013", "val_size": 0.2, "train_limit": None}}
    rebuilt = recorded_splits(data, info)
    direct = split_images(data, {"dataset": "fer2013", "val_size": 0.2}, 7)
    assert rebuilt.recorded
    assert np.array_equal(rebuilt.splits.val.images, direct.val.images)
    assert np.array_equal(rebuilt.splits.train.images, direct.train.images)
    assert len(rebuilt.splits.val) == 18 and set(rebuilt.splits.tests) == {
        "public_test",
        "private_test",
    }
    # The recorded split seed wins over the run's seed, as training used it.
    info["data"]["split_seed"] = 3
    seeded = recorded_splits(data, info).splits
    assert np.array_equal(seeded.val.images, split_images(data, info["data"], 3).val.images)


def test_what_the_record_leaves_out_takes_the_runs_defaults_and_says_so():
    data = fer_like()
    rebuilt = recorded_splits(data, {"data": {"dataset": "fer2013"}})
    assert not rebuilt.recorded
    assert rebuilt.data_config["val_size"] == DEFAULT_VAL_SIZE
    expected = split_images(data, {"dataset": "fer2013", "val_size": DEFAULT_VAL_SIZE}, 0)
    assert np.array_equal(rebuilt.splits.val.images, expected.val.images)
    # The data set may be named by the caller when the record does not name it.
    assert not recorded_splits(data, {}, dataset="fer2013").recorded
    # Classes the model was trained without are dropped, unless every class is asked for.
    info = {"seed": 0, "data": {"dataset": "fer2013", "val_size": 0.2, "exclude_classes": ["sad"]}}
    assert recorded_splits(data, info).splits.class_names == ["angry", "happy"]
    assert recorded_splits(data, info, every_class=True).splits.class_names == CLASSES
    with pytest.raises(ModelFileError, match="which data set"):
        recorded_splits(data, {"seed": 0})
