"""Files that ship inside ferlab: the pretrained FER2013 emotion model and its model card."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from ferlab.errors import FerlabError

SHIPPED_MODEL = "fer2013_cnn.onnx"
# The name that stands for the shipped model wherever a model file is taken (`--model shipped`).
SHIPPED_NAME = "shipped"
MODEL_CARD = "MODEL_CARD.md"
MODEL_FACTS = "model_card.json"


def asset_path(name: str) -> Path:
    """Path of the file ``name`` that ships in ``ferlab/assets``; one line if it is missing."""
    path = Path(str(resources.files(__name__).joinpath(name)))
    if not path.is_file():
        raise FerlabError(
            f"this ferlab installation lacks its shipped file {name}; reinstall ferlab"
        )
    return path


def shipped_model_path() -> Path:
    """Path of the pretrained FER2013 emotion model (ONNX) installed with ferlab."""
    return asset_path(SHIPPED_MODEL)


def resolve_model(model: str | os.PathLike | None) -> Path:
    """The model file ``model`` names: the shipped model for None or :data:`SHIPPED_NAME`
    (``--model shipped``), else the path as given (an existing file called ``shipped`` wins)."""
    if model is None or (str(model) == SHIPPED_NAME and not Path(model).exists()):
        return shipped_model_path()
    return Path(model)


def model_card() -> dict:
    """The shipped model's facts (classes, accuracy, per-class recall, input framing) as a dict."""
    return json.loads(asset_path(MODEL_FACTS).read_text(encoding="utf-8"))
