"""The network: VGG-style convolution blocks, global average pooling and one linear head."""

from __future__ import annotations

from torch import nn

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


def architecture_from_config(model_config: dict, num_classes: int) -> dict:
    """The JSON description a model file stores to rebuild the network."""
    return {
        "name": ARCHITECTURE_NAME,
        "num_classes": int(num_classes),
        "in_channels": 1,
        "widths": [int(w) for w in model_config["widths"]],
        "convs": [int(n) for n in model_config["convs"]],
        "dropout": float(model_config["dropout"]),
        "head_dropout": float(model_config["head_dropout"]),
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
