"""The CNN's training losses: cross-entropy on (mixed) targets and Hinton's distillation loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Targets:
    """A training batch's labels (N,), mixed with weight ``lam`` with its partners' labels (N,).

    Without mixup or CutMix the partners are the labels themselves and ``lam`` is 1.
    """

    labels: torch.Tensor
    partners: torch.Tensor
    lam: float = 1.0

    @classmethod
    def plain(cls, labels: torch.Tensor) -> Targets:
        """Unmixed labels."""
        return cls(labels, labels, 1.0)

    def hits(self, logits: torch.Tensor) -> torch.Tensor:
        """Correct predictions of logits (N, C), each label counted with its weight in the mix."""
        predicted = logits.argmax(1)
        hits = (predicted == self.labels).sum().double()
        if self.lam == 1.0:
            return hits
        return self.lam * hits + (1.0 - self.lam) * (predicted == self.partners).sum().double()


def mixed_cross_entropy(
    logits: torch.Tensor, targets: Targets, label_smoothing: float = 0.0
) -> torch.Tensor:
    """``lam * CE(logits, labels) + (1 - lam) * CE(logits, partners)`` for logits (N, C)."""
    loss = F.cross_entropy(logits, targets.labels, label_smoothing=label_smoothing)
    if targets.lam == 1.0:
        return loss
    other = F.cross_entropy(logits, targets.partners, label_smoothing=label_smoothing)
    return targets.lam * loss + (1.0 - targets.lam) * other


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor | Targets,
    *,
    temperature: float,
    alpha: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Hinton et al.'s distillation loss from logits (N, C) and labels (N,) or mixed targets.

    ``(1 - alpha) * CE(student, labels) + alpha * T**2 * KL(softmax(teacher / T) ||
    softmax(student / T))``, the T**2 keeping the soft term's gradients on the hard term's scale.
    With mixed :class:`Targets` the CE is :func:`mixed_cross_entropy` and the teacher's logits
    must be those of the same mixed images.
    """
    targets = labels if isinstance(labels, Targets) else Targets.plain(labels)
    hard = mixed_cross_entropy(student, targets, label_smoothing)
    soft = F.kl_div(
        F.log_softmax(student / temperature, dim=1),
        F.log_softmax(teacher / temperature, dim=1),
        log_target=True,
        reduction="batchmean",
    )
    return (1.0 - alpha) * hard + alpha * temperature**2 * soft
