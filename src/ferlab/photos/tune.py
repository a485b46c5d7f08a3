"""Fine-tuning the end of a CNN on a few hundred faces, cheaply enough to cross-validate.

The network is cut in two: a frozen front, run once per face and per view (the face and its
mirror, the flip augmentation and test-time view), and a trained end: the linear head alone
(``head``) or the last two convolution blocks and the head (``blocks``). Only the end runs per epoch,
so a fold of 300 faces trains in seconds on one CPU core. Training is seeded SGD with momentum
and a pull of the weights back towards the parent's (L2-SP, Li et al. 2018), so that few
photos cannot drag the network far from what FER2013 taught it; batch norms keep the parent's
statistics. Before any of it the input standardisation may be set to the photos' own mean and
standard deviation (a low-light or colour-cast camera shifts them; on shifted PublicTest faces,
while this was built, it alone took the shipped model from 44% to 53%, a third of the loss). Every epoch in ``EPOCHS`` is scored in the same run, and
the parent itself is a candidate, so cross-validation can also choose not to change the model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ferlab.deep.augment import center_crop, normalize

DEPTHS = ("head", "blocks")
EPOCHS = (0, 3, 6, 12)
LEARNING_RATES = {"head": 0.02, "blocks": 0.002}
PULL = 0.01  # weight of the L2-SP pull towards the parent's weights
BATCH = 32  # at most; a few dozen photos train in batches of an eighth of them (at least 4)


@dataclass(frozen=True)
class Choice:
    """How much to adapt: the input standardisation (the parent's, ``model``, or the photos'
    own mean and standard deviation, ``photos``), the trained ``depth`` and the ``epochs``."""

    standardise: str
    depth: str
    epochs: int

    @property
    def key(self) -> str:
        """``"photos:head:6"``."""
        return f"{self.standardise}:{self.depth}:{self.epochs}"

    def describe(self) -> str:
        """``"the photos' standardisation, the linear head, 6 epochs"``, in words."""
        if self.standardise == "model":
            return "no change (the parent model)"
        if self.epochs == 0:
            return "the photos' own standardisation, no training"
        part = "the linear head" if self.depth == "head" else "the last two conv blocks and head"
        return f"the photos' own standardisation, {part} trained {self.epochs} epochs"


PARENT = Choice("model", "head", 0)


def candidates() -> list[Choice]:
    """Every choice, simplest first (ties go to the first): the parent unchanged, the input
    re-standardised on the photos, and that with the head or the last two blocks trained."""
    trained = [Choice("photos", d, e) for d in DEPTHS for e in EPOCHS if e > 0]
    return [PARENT, Choice("photos", "head", 0), *trained]


def photo_standardisation(images: np.ndarray) -> tuple[float, float]:
    """The mean and standard deviation of uint8 images (N, H, W) (the parent's input
    standardisation is FER2013's; these put the user's photos on the same footing)."""
    pixels = np.asarray(images, dtype=np.float64)
    return float(pixels.mean()), float(max(pixels.std(), 1.0))


def split_network(module: nn.Module, depth: str) -> tuple[nn.Module, nn.Module]:
    """(front, end) of a :class:`~ferlab.deep.model.FerCNN` (shared modules, not copies):
    ``end(front(x))`` is the network's output logits for x (N, 1, crop, crop)."""
    if depth == "head":
        front = nn.Sequential(module.features, module.pool, nn.Flatten(1))
        return front, nn.Sequential(module.head)
    pools = [i for i, m in enumerate(module.features) if isinstance(m, nn.MaxPool2d)]
    start = pools[-2] + 1 if len(pools) > 1 else 0
    front = module.features[:start]
    end = nn.Sequential(module.features[start:], module.pool, nn.Flatten(1), module.head)
    return front, end


@torch.no_grad()
def front_outputs(classifier, front: nn.Module, images: np.ndarray) -> torch.Tensor:
    """The frozen front's output for each face and its mirror: (N, 2, ...) float32."""
    front.eval()
    out = []
    for start in range(0, len(images), 256):
        batch = torch.from_numpy(np.ascontiguousarray(images[start : start + 256]))
        x = center_crop(normalize(batch, classifier.mean, classifier.std), classifier.crop)
        views = [front(x), front(torch.flip(x, dims=[-1]))]
        out.append(torch.stack(views, dim=1))
    return torch.cat(out)


def view_probabilities(end: nn.Module, inputs: torch.Tensor, tta: str) -> np.ndarray:
    """(N, C) class probabilities of cached front outputs (N, 2, ...): the first view, or the
    mean of both views' softmax for ``tta="flip"``."""
    end.eval()
    with torch.no_grad():
        views = [0, 1] if tta == "flip" else [0]
        probs = sum(torch.softmax(end(inputs[:, v]), dim=1) for v in views) / len(views)
    return probs.numpy().astype(np.float64)


def _freeze_norms(end: nn.Module) -> None:
    for layer in end.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.eval()


def train_end(
    end: nn.Module,
    inputs: torch.Tensor,
    labels: np.ndarray,
    depth: str,
    *,
    epochs: tuple[int, ...] = EPOCHS,
    seed: int = 0,
    score: torch.Tensor | None = None,
    tta: str = "flip",
) -> dict[int, np.ndarray]:
    """Train a copy of ``end`` on cached front outputs (N, 2, ...) with labels (N,); return the
    class probabilities (M, C) of ``score`` inputs (M, 2, ...) after each epoch count in
    ``epochs`` (0: untrained), or, without ``score``, ``{max(epochs): end}`` trained."""
    end = copy.deepcopy(end)
    parent = [p.detach().clone() for p in end.parameters()]
    optimizer = torch.optim.SGD(end.parameters(), lr=LEARNING_RATES[depth], momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    batch = max(4, min(BATCH, len(y) // 8))
    results: dict = {}
    if score is not None and 0 in epochs:
        results[0] = view_probabilities(end, score, tta)
    for epoch in range(1, max(epochs) + 1):
        end.train()
        _freeze_norms(end)
        order = torch.randperm(len(y), generator=generator)
        flips = torch.randint(0, 2, (len(y),), generator=generator)
        for start in range(0, len(y), batch):
            index = order[start : start + batch]
            x = inputs[index, flips[index]]
            loss = nn.functional.cross_entropy(end(x), y[index])
            pull = sum(
                ((p - p0) ** 2).sum() for p, p0 in zip(end.parameters(), parent, strict=True)
            )
            optimizer.zero_grad()
            (loss + 0.5 * PULL * pull).backward()
            optimizer.step()
        if score is not None and epoch in epochs:
            results[epoch] = view_probabilities(end, score, tta)
    if score is None:
        results[max(epochs)] = end.eval()
    return results
