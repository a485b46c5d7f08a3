"""ONNX export of a trained CNN, checked against PyTorch with onnxruntime."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ferlab.common.files import write_bytes_atomic
from ferlab.deep.augment import center_crop
from ferlab.deep.classifier import CNNClassifier
from ferlab.errors import FerlabError
from ferlab.inference.onnx_model import write_record
from ferlab.modelfile import new_record

if TYPE_CHECKING:
    import onnxruntime

TOLERANCE = 1e-4


class _Exported(torch.nn.Module):
    """uint8-valued float pixels (N, 48, 48) -> class probabilities, preprocessing included."""

    def __init__(self, classifier: CNNClassifier) -> None:
        super().__init__()
        self.network = classifier.module
        self.mean, self.std, self.crop = classifier.mean, classifier.std, classifier.crop

    def forward(self, pixels):
        x = ((pixels - self.mean) / self.std).unsqueeze(1)
        return torch.softmax(self.network(center_crop(x, self.crop)), dim=1)


def _write_graph(module: torch.nn.Module, example: torch.Tensor, target, names: tuple) -> None:
    """Export ``module`` run on ``example`` to ``target`` (a path or a binary file) as ONNX,
    opset 17, with one input and one output, named by ``names``, whose first axis is free."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            target,
            dynamo=False,
            input_names=[names[0]],
            output_names=[names[1]],
            dynamic_axes={name: {0: "batch"} for name in names},
            opset_version=17,
        )


def network_session(
    module: torch.nn.Module, example: torch.Tensor, *, threads: int
) -> onnxruntime.InferenceSession:
    """An onnxruntime CPU session that runs ``module`` (eval mode, float32) as exported in
    memory on inputs shaped like ``example`` (N, C, H, W), for any N: input ``x``, output ``y``."""
    import onnxruntime

    buffer = io.BytesIO()
    with torch.no_grad():
        _write_graph(module.eval(), example.float().contiguous(), buffer, ("x", "y"))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    return onnxruntime.InferenceSession(
        buffer.getvalue(), options, providers=["CPUExecutionProvider"]
    )


def onnx_export_record(classifier: CNNClassifier, name: str) -> dict:
    """The model record of ``classifier`` exported as ONNX: its classes, the 48x48 input, the
    pixel standardisation and crop the graph applies, its architecture and training record."""
    return new_record(
        "onnx",
        name=name,
        class_names=list(classifier.class_names),
        input_shape=list(classifier.input_shape),
        preprocessing={"mean": classifier.mean, "std": classifier.std, "crop": classifier.crop},
        architecture=classifier.meta.get("architecture"),
        training=dict(classifier.training_info or {}),
    )


def export_onnx(
    classifier: CNNClassifier,
    path: str | os.PathLike,
    *,
    name: str | None = None,
    check_samples: int = 16,
    seed: int = 0,
) -> dict:
    """Write ``path`` (input ``pixels``: float32 N x 48 x 48 in 0..255; output ``probabilities``).

    ``name`` (default: the file's stem) is stored in the file's model record (under ``ferlab``
    in its metadata, :mod:`ferlab.modelfile`). Runs the file with onnxruntime on random images
    and raises if it differs from PyTorch by more than 1e-4; returns what was checked.
    """
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise FerlabError(
            "ONNX export needs onnx and onnxruntime: pip install 'ferlab[deep]'"
        ) from None
    path = Path(path)
    classifier.to("cpu")
    wrapper = _Exported(classifier).eval()
    graph = io.BytesIO()
    _write_graph(wrapper, torch.zeros(2, 48, 48), graph, ("pixels", "probabilities"))
    model = onnx.load_from_string(graph.getvalue())
    write_record(model, onnx_export_record(classifier, name or path.stem))
    onnx.checker.check_model(model)
    write_bytes_atomic(path, model.SerializeToString())

    images = np.random.default_rng(seed).integers(0, 256, (check_samples, 48, 48), dtype=np.uint8)
    expected = classifier.predict_proba(images) if classifier.tta == "none" else None
    if expected is None:
        with torch.no_grad():
            expected = wrapper(torch.from_numpy(images).float()).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"pixels": images.astype(np.float32)})[0]
    diff = float(np.abs(got - expected).max())
    if not diff <= TOLERANCE:
        raise FerlabError(f"{path}: the ONNX model differs from PyTorch by {diff:.2e} (> 1e-4)")
    return {"samples": check_samples, "max_abs_diff": diff}
