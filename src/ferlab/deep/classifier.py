"""A trained CNN behind ferlab's classifier interface (class_names, input_shape, predict_proba)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ferlab.deep.augment import normalize
from ferlab.deep.tensors import write_model
from ferlab.deep.tta import crop_views
from ferlab.errors import DataError


class CNNClassifier:
    """Predicts class probabilities of uint8 48x48 faces, with optional test-time augmentation."""

    input_shape = (48, 48)

    def __init__(
        self,
        module: torch.nn.Module,
        class_names: list[str],
        mean: float,
        std: float,
        crop: int,
        *,
        tta: str = "none",
        device: str | torch.device = "cpu",
        batch_size: int = 512,
        meta: dict | None = None,
    ) -> None:
        self.module = module.eval()
        self.class_names = list(class_names)
        self.mean, self.std, self.crop = float(mean), float(std), int(crop)
        self.tta = tta
        self.batch_size = batch_size
        self.meta = meta or {}
        self.device = torch.device("cpu")
        self.to(device)

    @property
    def training_info(self) -> dict:
        """What the model file records about its training (data settings, seed)."""
        return self.meta.setdefault("training_info", {})

    @training_info.setter
    def training_info(self, info: dict) -> None:
        self.meta["training_info"] = dict(info)

    @property
    def parameter_count(self) -> int:
        """Number of weights of the network."""
        return int(sum(p.numel() for p in self.module.parameters()))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model as a safetensors file (weights and model record); return its path."""
        return write_model(path, self.meta, self.module.state_dict())

    def to(self, device: str | torch.device) -> CNNClassifier:
        """Move the network to ``device``."""
        self.device = torch.device(device)
        self.module.to(self.device)
        return self

    def _as_images(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim == 4 and X.shape[-1] == 1:
            X = X[..., 0]
        if X.ndim != 3 or X.shape[1:] != self.input_shape:
            raise DataError(f"the CNN expects (N, 48, 48) grayscale images, got shape {X.shape}")
        return X

    @torch.no_grad()
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(N, C) class probabilities of uint8 images (N, 48, 48), preprocessing applied."""
        X = self._as_images(X)
        self.module.eval()
        out = []
        for start in range(0, len(X), self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(X[start : start + self.batch_size]))
            batch = batch.to(self.device)
            x = normalize(batch, self.mean, self.std)
            views = crop_views(x, self.crop, self.tta)
            probs = sum(torch.softmax(self.module(view).float(), dim=1) for view in views)
            out.append((probs / len(views)).cpu().numpy())
        if not out:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        return np.concatenate(out).astype(np.float32)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted class indices (N,) of uint8 images (N, 48, 48)."""
        return self.predict_proba(X).argmax(axis=1)
