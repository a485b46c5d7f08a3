"""Fine-tuning a CNN on a few hundred faces, cheaply enough to cross-validate.

Two depths are trained, each as a candidate: the linear head alone (``head``), on the frozen
features of each face and its mirror, computed once; or the whole network (``all``), on random
crops of the 48x48 face (up to ``SHIFT`` pixels off the centre crop, as the parent was trained)
flipped at random. Both are seeded SGD with momentum, label smoothing as the parent was trained
with, a pull of the weights back towards the parent's (L2-SP, Li et al. 2018) so that few photos
cannot drag the network far from what FER2013 taught it, and batch norms that keep the parent's
statistics. The weights scored (and written) after ``e`` epochs are the mean of the weights at
the end of epochs 1..e (stochastic weight averaging, Izmailov et al. 2018): fine-tuning from one
parent stays in one basin, so the mean is a network, and it is flatter than any single epoch,
which makes the choice of epochs matter less. Scoring averages the face and its mirror, as
``--tta flip`` does.

Before any of it the input standardisation may be set to the photos' own mean and standard
deviation (a low-light or colour-cast camera shifts them). Every epoch count in ``EPOCHS`` is
scored in the same run, and the parent itself is a candidate, so cross-validation can also
choose not to change the model.

Measured while this was built, on shifted FER2013 *PublicTest* photos (never the benchmark's
PrivateTest ones), 221 faces to train and 858 held out, one seed: the photos' standardisation
alone 52.0% (the parent 45.1%); the last two blocks at a constant rate 55-57% and falling after 6
epochs; the whole network with weight averaging 57-59% from 3 to 24 epochs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ferlab.deep.augment import center_crop, normalize

DEPTHS = ("head", "all")
# One trained epoch count per depth: under weight averaging the count matters little (3 to 24
# epochs within 2 points, below), while every extra candidate makes the cross-validated choice
# noisier (measured on shifted PublicTest photos: benchmarks/adapt_shift.py --split public_test).
EPOCHS = (0, 6)
LEARNING_RATES = {"head": 0.02, "all": 0.001}
PULL = 0.01  # weight of the L2-SP pull towards the parent's weights
SMOOTHING = 0.1  # label smoothing, as the shipped model was trained
SHIFT = 4  # pixels: the random crops' largest offset from the centre crop (``all``)
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
        part = "the linear head" if self.depth == "head" else "the whole network"
        return f"the photos' own standardisation, {part} trained {self.epochs} epochs"


PARENT = Choice("model", "head", 0)


def candidates() -> list[Choice]:
    """Every choice, simplest first (ties go to the first): the parent unchanged, the input
    re-standardised on the photos, and that with the head or the whole network trained."""
    trained = [Choice("photos", d, e) for d in DEPTHS for e in EPOCHS if e > 0]
    return [PARENT, Choice("photos", "head", 0), *trained]


def photo_standardisation(images: np.ndarray) -> tuple[float, float]:
    """The mean and standard deviation of uint8 images (N, H, W) (the parent's input
    standardisation is FER2013's; these put the user's photos on the same footing)."""
    pixels = np.asarray(images, dtype=np.float64)
    return float(pixels.mean()), float(max(pixels.std(), 1.0))


def split_network(module: nn.Module, depth: str) -> tuple[nn.Module, nn.Module]:
    """(front, end) of a :class:`~ferlab.deep.model.FerCNN` (shared modules, not copies):
    ``end(front(x))`` is the network's output logits for x (N, 1, crop, crop); the front is
    empty for ``all``."""
    if depth == "head":
        front = nn.Sequential(module.features, module.pool, nn.Flatten(1))
        return front, nn.Sequential(module.head)
    end = nn.Sequential(module.features, module.pool, nn.Flatten(1), module.head)
    return nn.Sequential(), end


@torch.no_grad()
def front_outputs(classifier, front: nn.Module, images: np.ndarray) -> torch.Tensor:
    """What the trained end reads, for uint8 faces (N, 48, 48): with an empty front (``all``),
    the standardised faces (N, 1, 48, 48), cropped per batch; otherwise the frozen front's
    output for the centre crop of each face and of its mirror, (N, 2, ...) float32."""
    front.eval()
    out = []
    for start in range(0, len(images), 256):
        batch = torch.from_numpy(np.ascontiguousarray(images[start : start + 256]))
        x = normalize(batch, classifier.mean, classifier.std)
        if not len(front):
            out.append(x)
            continue
        x = center_crop(x, classifier.crop)
        out.append(torch.stack([front(x), front(torch.flip(x, dims=[-1]))], dim=1))
    return torch.cat(out)


def _views(inputs: torch.Tensor, crop: int | None, tta: str) -> list[torch.Tensor]:
    """The test-time views of cached inputs: the centre crop (or the face's front output), and
    its mirror for ``tta="flip"``."""
    if crop is None:
        return [inputs[:, 0], inputs[:, 1]][: 2 if tta == "flip" else 1]
    centre = center_crop(inputs, crop)
    return [centre, torch.flip(centre, dims=[-1])][: 2 if tta == "flip" else 1]


def _training_batch(inputs, index, crop, generator) -> torch.Tensor:
    """One batch of training views: a random view (face or mirror) of each cached front
    output, or a random crop up to ``SHIFT`` pixels off the centre, flipped at random."""
    flips = torch.randint(0, 2, (len(index),), generator=generator)
    if crop is None:
        return inputs[index, flips]
    side = inputs.shape[-1]
    top = (side - crop) // 2
    low, high = max(0, top - SHIFT), min(side - crop, top + SHIFT)
    corners = torch.randint(low, high + 1, (len(index), 2), generator=generator).tolist()
    crops = [
        inputs[i, :, dy : dy + crop, dx : dx + crop]
        for i, (dy, dx) in zip(index.tolist(), corners, strict=True)
    ]
    x = torch.stack(crops)
    return torch.where(flips.view(-1, 1, 1, 1).bool(), torch.flip(x, dims=[-1]), x)


def view_probabilities(
    end: nn.Module, inputs: torch.Tensor, tta: str, crop: int | None = None
) -> np.ndarray:
    """(N, C) class probabilities of cached inputs: the first view, or the mean of both views'
    softmax for ``tta="flip"``; ``crop`` is the centre crop's side for standardised faces."""
    end.eval()
    with torch.no_grad():
        views = _views(inputs, crop, tta)
        probs = sum(torch.softmax(end(v), dim=1) for v in views) / len(views)
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
    crop: int | None = None,
) -> dict[int, np.ndarray]:
    """Train a copy of ``end`` on cached inputs (:func:`front_outputs`) with labels (N,);
    return the class probabilities (M, C) of ``score`` inputs after each epoch count in
    ``epochs`` (0: untrained; otherwise the mean of the weights at the end of each epoch so
    far), or, without ``score``, ``{max(epochs): end}`` with those mean weights. ``crop``: the
    centre crop's side, for ``depth="all"``."""
    end = copy.deepcopy(end)
    crop = crop if depth == "all" else None
    parameters = list(end.parameters())
    parent = [p.detach().clone() for p in parameters]
    optimizer = torch.optim.SGD(parameters, lr=LEARNING_RATES[depth], momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    batch = max(4, min(BATCH, len(y) // 8))
    results: dict = {}
    if score is not None and 0 in epochs:
        results[0] = view_probabilities(end, score, tta, crop)
    average = None
    for epoch in range(1, max(epochs) + 1):
        end.train()
        _freeze_norms(end)
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), batch):
            index = order[start : start + batch]
            x = _training_batch(inputs, index, crop, generator)
            loss = nn.functional.cross_entropy(end(x), y[index], label_smoothing=SMOOTHING)
            pull = sum(((p - p0) ** 2).sum() for p, p0 in zip(parameters, parent, strict=True))
            optimizer.zero_grad()
            (loss + 0.5 * PULL * pull).backward()
            optimizer.step()
        with torch.no_grad():
            current = [p.detach().clone() for p in parameters]
            if average is None:
                average = [c.clone() for c in current]
            else:
                for a, c in zip(average, current, strict=True):
                    a.add_((c - a) / epoch)
        if score is not None and epoch in epochs:
            with torch.no_grad():
                for p, a in zip(parameters, average, strict=True):
                    p.copy_(a)
            results[epoch] = view_probabilities(end, score, tta, crop)
            with torch.no_grad():
                for p, c in zip(parameters, current, strict=True):
                    p.copy_(c)
    if score is None:
        with torch.no_grad():
            for p, a in zip(parameters, average, strict=True):
                p.copy_(a)
        results[max(epochs)] = end.eval()
    return results
