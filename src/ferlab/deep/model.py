"""The network: VGG-style convolution blocks, global average pooling and one linear head."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from ferlab.settings import CNNModelSettings

ARCHITECTURE_NAME = "ferlab-vgg"


class FerCNN(nn.Module):
    """Blocks of (3x3 conv, batch norm, ReLU) x n, max pooling between blocks, then ``head``.

    ``head`` is the single ``nn.Linear`` classifier layer, so it can be replaced or grown alone.
    """

    def __init__(
        self,
        num_classes: int,
        widths: list[int],
        convs: list[int],
        dropout: float = 0.0,
        head_dropout: float = 0.0,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for block, (width, count) in enumerate(zip(widths, convs, strict=True)):
            for _ in range(count):
                layers += [
                    nn.Conv2d(channels, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                channels = width
            if block < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
                if dropout:
                    layers.append(nn.Dropout(dropout))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head_dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.pool(self.features(x)).flatten(1)
        return self.head(self.head_dropout(x))


def architecture_from_config(model_settings: CNNModelSettings, num_classes: int) -> dict:
    """The JSON description a model file stores to rebuild the network."""
    return {
        "name": ARCHITECTURE_NAME,
        "num_classes": int(num_classes),
        "in_channels": 1,
        "widths": [int(w) for w in model_settings.widths],
        "convs": [int(n) for n in model_settings.convs],
        "dropout": float(model_settings.dropout),
        "head_dropout": float(model_settings.head_dropout),
    }


def build_cnn(architecture: dict) -> FerCNN:
    """The network an architecture description names."""
    if architecture.get("name") != ARCHITECTURE_NAME:
        raise ValueError(f"unknown architecture {architecture.get('name')!r}")
    return FerCNN(
        architecture["num_classes"],
        architecture["widths"],
        architecture["convs"],
        architecture.get("dropout", 0.0),
        architecture.get("head_dropout", 0.0),
        architecture.get("in_channels", 1),
    )


def widens(start: dict, architecture: dict) -> bool:
    """Whether ``architecture`` is ``start``'s network or the same one with some blocks wider."""
    same_but_widths = {**architecture, "widths": start["widths"]} == start
    return same_but_widths and all(
        new >= old for new, old in zip(architecture["widths"], start["widths"], strict=True)
    )


@torch.no_grad()
def copy_widened(start: FerCNN, wide: FerCNN, generator: torch.Generator) -> None:
    """Set ``wide`` (``start``'s network, or one with wider blocks) to compute ``start``'s
    function: each added channel copies a random channel of its layer (convolution weights and
    batch-norm statistics), and the next layer's weights on a copied channel are split among
    its copies in random shares, so training pulls the copies apart (Net2WiderNet, Chen et al.
    2016). With the same widths ``wide`` becomes an exact copy of ``start``."""
    old_layers = [m for m in start.features if isinstance(m, nn.Conv2d | nn.BatchNorm2d)]
    new_layers = [m for m in wide.features if isinstance(m, nn.Conv2d | nn.BatchNorm2d)]
    source = torch.arange(start.features[0].in_channels)  # new input channel -> old channel
    share = torch.ones(len(source))  # each new input channel's part of its old channel
    for old_conv, old_norm, new_conv, new_norm in zip(
        old_layers[0::2], old_layers[1::2], new_layers[0::2], new_layers[1::2], strict=True
    ):
        weight = old_conv.weight[:, source] * share[None, :, None, None]
        source, share = _copied_channels(old_conv.out_channels, new_conv.out_channels, generator)
        new_conv.weight.copy_(weight[source])
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(new_norm, name).copy_(getattr(old_norm, name)[source])
        new_norm.num_batches_tracked.copy_(old_norm.num_batches_tracked)
    wide.head.weight.copy_(start.head.weight[:, source] * share[None, :])
    wide.head.bias.copy_(start.head.bias)


def _copied_channels(old: int, new: int, generator: torch.Generator):
    """For ``new`` channels made from ``old``: the old channel each copies (the first ``old``
    copy themselves), and each one's random share of its old channel (shares sum to 1)."""
    extra = torch.randint(0, old, (new - old,), generator=generator)
    source = torch.cat([torch.arange(old), extra])
    weights = 0.5 + torch.rand(new, generator=generator)
    totals = torch.zeros(old).index_add_(0, source, weights)
    return source, weights / totals[source]
