"""Fully connected networks of any depth with ReLU, inverted dropout and L2 regularisation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ferlab.common.arrays import write_npz
from ferlab.modelfile import RECORD_KEY, encode_record, new_record
from ferlab.nn.layers import (
    dropout_backward,
    dropout_forward,
    linear_backward,
    linear_forward,
    relu_backward,
    relu_forward,
    softmax,
    softmax_loss,
)
from ferlab.nn.preprocess import Preprocessor
from ferlab.nn.settings import ModelSettings, checked

PREDICT_BATCH = 4096


MODEL_FORMAT = "ferlab-model"


class FullyConnectedNet:
    """{linear - relu - [dropout]} x L - linear - softmax, with weights kept in ``params``."""

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int],
        num_classes: int,
        *,
        dropout: float = ModelSettings.dropout,
        reg: float = ModelSettings.reg,
        weight_scale: float | None = ModelSettings.weight_scale,
        dtype: np.dtype | type | str = ModelSettings.dtype,
        seed: int | None = None,
    ) -> None:
        if int(input_dim) < 1 or int(num_classes) < 2:
            raise ValueError("input_dim must be >= 1 and num_classes >= 2")
        self.settings: ModelSettings = checked(
            ModelSettings, "FullyConnectedNet", hidden_dims=list(hidden_dims), dropout=dropout,
            reg=reg, weight_scale=weight_scale, dtype=np.dtype(dtype).name,
        )  # fmt: skip
        self.input_dim = int(input_dim)
        self.hidden_dims = [int(h) for h in hidden_dims]
        self.num_classes = int(num_classes)
        self.dropout = float(dropout)
        self.reg = float(reg)
        self.weight_scale = weight_scale
        self.dtype = np.dtype(dtype)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.preprocessor: Preprocessor | None = None
        self.class_names: list[str] | None = None
        self.input_shape: tuple[int, ...] | None = None
        self.training_info: dict = {}
        self.params: dict[str, np.ndarray] = {}
        self.trainable: dict[str, bool] = {}
        dims = [self.input_dim, *self.hidden_dims, self.num_classes]
        for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:], strict=True), start=1):
            std = np.sqrt(2.0 / fan_in) if weight_scale is None else float(weight_scale)
            self.params[f"W{i}"] = (self.rng.standard_normal((fan_in, fan_out)) * std).astype(
                self.dtype
            )
            self.params[f"b{i}"] = np.zeros(fan_out, dtype=self.dtype)
        self.trainable = {name: True for name in self.params}

    @classmethod
    def from_settings(
        cls, input_dim: int, num_classes: int, settings: ModelSettings, *, seed: int | None = None
    ) -> FullyConnectedNet:
        """A net of ``settings`` for inputs (N, input_dim) and ``num_classes`` classes."""
        return cls(
            input_dim, settings.hidden_dims, num_classes, dropout=settings.dropout,
            reg=settings.reg, weight_scale=settings.weight_scale, dtype=np.dtype(settings.dtype),
            seed=seed,
        )  # fmt: skip

    @property
    def num_layers(self) -> int:
        """Number of linear layers."""
        return len(self.hidden_dims) + 1

    def config(self) -> dict:
        """Architecture as a JSON-ready dict (the constructor's arguments)."""
        return {
            "input_dim": self.input_dim,
            "hidden_dims": self.hidden_dims,
            "num_classes": self.num_classes,
            "dropout": self.dropout,
            "reg": self.reg,
            "weight_scale": self.weight_scale,
            "dtype": self.dtype.name,
            "seed": self.seed,
        }

    def _forward(
        self, X: np.ndarray, train: bool, rng: np.random.Generator | None
    ) -> tuple[np.ndarray, list]:
        caches = []
        out = X.reshape(X.shape[0], -1)
        for i in range(1, self.num_layers):
            out, lin_cache = linear_forward(out, self.params[f"W{i}"], self.params[f"b{i}"])
            out, relu_cache = relu_forward(out)
            out, drop_cache = dropout_forward(out, self.dropout, train, rng)
            caches.append((lin_cache, relu_cache, drop_cache))
        L = self.num_layers
        scores, lin_cache = linear_forward(out, self.params[f"W{L}"], self.params[f"b{L}"])
        caches.append(lin_cache)
        return scores, caches

    def _backward(self, dscores: np.ndarray, caches: list) -> dict[str, np.ndarray]:
        grads: dict[str, np.ndarray] = {}
        L = self.num_layers
        dout, grads[f"W{L}"], grads[f"b{L}"] = linear_backward(
            dscores, caches[-1], need_dX=L > 1 and self.needs_dX(L)
        )
        for i in range(L - 1, 0, -1):
            if dout is None:  # every layer below is frozen: their gradients are never used
                break
            lin_cache, relu_cache, drop_cache = caches[i - 1]
            dout = dropout_backward(dout, drop_cache)
            dout = relu_backward(dout, relu_cache)
            dout, grads[f"W{i}"], grads[f"b{i}"] = linear_backward(
                dout, lin_cache, need_dX=i > 1 and self.needs_dX(i)
            )
        return grads

    def needs_dX(self, layer: int) -> bool:
        """Whether any layer below ``layer`` is trainable, so its input gradient is needed."""
        return any(self.trainable[f"W{j}"] or self.trainable[f"b{j}"] for j in range(1, layer))

    def loss_and_scores(
        self, X: np.ndarray, y: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[float, float, dict[str, np.ndarray], np.ndarray]:
        """Training-mode data loss, L2 term, gradients (of the layers that some trainable layer
        needs) and scores (N, C)."""
        scores, caches = self._forward(X, train=True, rng=rng if rng is not None else self.rng)
        data_loss, dscores = softmax_loss(scores, y)
        grads = self._backward(dscores.astype(self.dtype, copy=False), caches)
        reg_loss = 0.0
        if self.reg > 0:
            for i in range(1, self.num_layers + 1):
                W = self.params[f"W{i}"]
                reg_loss += 0.5 * self.reg * float(np.vdot(W, W))
                if f"W{i}" in grads:
                    grads[f"W{i}"] += self.reg * W
        return data_loss, reg_loss, grads, scores

    def loss(
        self, X: np.ndarray, y: np.ndarray | None = None, rng: np.random.Generator | None = None
    ):
        """Class scores when y is None (test mode), else ``(loss, grads)`` in training mode."""
        if y is None:
            scores, _ = self._forward(X, train=False, rng=None)
            return scores
        data_loss, reg_loss, grads, _ = self.loss_and_scores(X, y, rng)
        return data_loss + reg_loss, grads

    def scores(self, X: np.ndarray, *, raw: bool = False) -> np.ndarray:
        """Test-mode class scores (N, C), in batches; ``raw`` applies the stored preprocessing.

        ``X`` is preprocessed features (N, D) unless ``raw``; then uint8 images (N, *input_shape).
        """
        out = np.empty((X.shape[0], self.num_classes), dtype=self.dtype)
        for start in range(0, X.shape[0], PREDICT_BATCH):
            batch = X[start : start + PREDICT_BATCH]
            if raw:
                batch = self.preprocess(batch)
            out[start : start + PREDICT_BATCH], _ = self._forward(batch, train=False, rng=None)
        return out

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C) of uint8 images (N, *input_shape), preprocessing applied."""
        return softmax(self.scores(images, raw=True))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Most likely class index (N,) of uint8 images, preprocessing applied."""
        return self.scores(images, raw=True).argmax(axis=1)

    def preprocess(self, X_raw: np.ndarray) -> np.ndarray:
        """Apply the stored input transform (flatten and cast when there is none)."""
        if self.preprocessor is None:
            return X_raw.reshape(X_raw.shape[0], -1).astype(self.dtype, copy=False)
        return self.preprocessor.transform(X_raw, dtype=self.dtype)

    @property
    def parameter_count(self) -> int:
        """Number of weights and biases."""
        return int(sum(p.size for p in self.params.values()))

    def save(self, path) -> Path:
        """Write the model as one ``.npz`` of arrays with its model record (JSON, see
        :mod:`ferlab.modelfile`); return its path."""
        arrays = {f"param/{name}": value for name, value in self.params.items()}
        preprocessing = None
        if self.preprocessor is not None:
            preprocessing, pre_arrays = self.preprocessor.state()
            arrays.update({f"preprocessing/{k}": v for k, v in pre_arrays.items()})
        record = new_record(
            "fully_connected",
            architecture=self.config(),
            class_names=None if self.class_names is None else list(self.class_names),
            input_shape=list(self.input_shape) if self.input_shape else None,
            preprocessing=preprocessing,
            trainable=self.trainable,
            training=self.training_info,
        )
        return write_npz(path, encode_record(record), arrays, meta_key=RECORD_KEY)
