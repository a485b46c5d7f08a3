"""The network to adapt: a CNN model file as it is, or a ferlab ONNX file (the shipped int8 one
included) rebuilt as the PyTorch network it was exported from.

Why rebuild from the ONNX file rather than fine-tune the float checkpoint it came from: the
checkpoint does not ship with ferlab (the wheel holds only the ONNX file), and the file the
user runs is the parent the card must name. The exported graph is standardise -> centre crop ->
(3x3 convolution with batch norm folded in, ReLU) blocks with max pooling -> global average
pool -> linear head -> softmax; its int8 weights are dequantised (``(q - zero_point) * scale``)
and each folded convolution becomes the network's convolution followed by a batch norm that
adds the folded bias. The rebuilt network agrees with the int8 file on 98% of top-1 classes of
PrivateTest faces (the float checkpoint it was quantised from agrees as much); the agreement
on the user's own faces is measured and recorded each run.
"""

from __future__ import annotations

import copy

import numpy as np

from ferlab.errors import ModelFileError

MIN_AGREEMENT = 0.9  # a rebuilt network must agree this often with its ONNX file's top class


def _dequantized_values(graph) -> dict[str, np.ndarray]:
    """Every initializer of the graph, and the float value of each DequantizeLinear of one."""
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in values:
            continue
        q = values[node.input[0]].astype(np.float64)
        scale = values[node.input[1]].astype(np.float64)
        zero = values[node.input[2]].astype(np.float64) if len(node.input) > 2 else 0.0
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if np.ndim(scale) == 1 and q.ndim > 1:
            shape = [1] * q.ndim
            shape[axis] = -1
            scale = scale.reshape(shape)
            zero = np.reshape(zero, shape) if np.ndim(zero) else zero
        values[node.output[0]] = ((q - zero) * scale).astype(np.float32)
    return values


def _layers(graph, values: dict[str, np.ndarray]):
    """(mean, std, blocks of (weight, bias) per convolution, head weight (C, F), head bias)."""
    mean = std = None
    blocks: list[list[tuple[np.ndarray, np.ndarray]]] = [[]]
    head = None
    for node in graph.node:
        if node.op_type == "Sub" and node.input[0] == "pixels":
            mean, standardised = float(values[node.input[1]]), node.output[0]
        elif node.op_type == "Div" and mean is not None and std is None:
            if node.input[0] == standardised:
                std = float(values[node.input[1]])
        elif node.op_type == "Conv":
            weight = values[node.input[1]]
            bias = values[node.input[2]] if len(node.input) > 2 else np.zeros(len(weight))
            blocks[-1].append((weight, bias))
        elif node.op_type == "MaxPool":
            blocks.append([])
        elif node.op_type == "Gemm":
            weight = values[node.input[1]]
            if not any(a.name == "transB" and a.i for a in node.attribute):
                weight = weight.T
            head = (weight, values[node.input[2]])
    if mean is None or std is None or head is None or not all(blocks):
        raise ModelFileError(
            "this ONNX file is not a ferlab CNN export (standardise, conv blocks, linear head), "
            "so it cannot be adapted; adapt the .safetensors file it was exported from"
        )
    return mean, std, blocks, head


def rebuild_from_onnx(classifier, check_images: np.ndarray):
    """The :class:`~ferlab.deep.CNNClassifier` (float32) an ONNX classifier was exported from,
    checked against the file on ``check_images`` (N, 48, 48) uint8; returns it and the share of
    those images on which both give the same top class."""
    import onnx
    import torch

    from ferlab.deep import CNNClassifier
    from ferlab.deep.model import build_cnn

    graph = onnx.load_from_string(classifier._file_bytes).graph
    values = _dequantized_values(graph)
    mean, std, blocks, (head_w, head_b) = _layers(graph, values)
    architecture = {
        "name": "ferlab-vgg",
        "num_classes": int(head_w.shape[0]),
        "in_channels": int(blocks[0][0][0].shape[1]),
        "widths": [int(block[0][0].shape[0]) for block in blocks],
        "convs": [len(block) for block in blocks],
        "dropout": 0.0,
        "head_dropout": 0.0,
    }
    try:
        module = build_cnn(architecture)
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"cannot rebuild the ONNX file's network: {exc}") from None
    convs = [m for m in module.features if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in module.features if isinstance(m, torch.nn.BatchNorm2d)]
    folded = [layer for block in blocks for layer in block]
    with torch.no_grad():
        for conv, norm, (weight, bias) in zip(convs, norms, folded, strict=True):
            conv.weight.copy_(torch.from_numpy(weight))
            norm.weight.fill_(1.0)
            norm.bias.copy_(torch.from_numpy(bias.astype(np.float32)))
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0 - norm.eps)
        module.head.weight.copy_(torch.from_numpy(head_w))
        module.head.bias.copy_(torch.from_numpy(head_b.astype(np.float32)))
    meta = {
        "format": "ferlab-cnn",
        "kind": "cnn",
        "architecture": architecture,
        "class_names": list(classifier.class_names),
        "input_shape": list(classifier.input_shape),
        "training_info": copy.deepcopy(classifier.training_info),
    }
    # The centre crop sits in the graph as shape arithmetic: take the one that matches the file.
    saved_tta = classifier.tta
    classifier.tta = "none"
    try:
        reference = classifier.predict_proba(check_images)
    finally:
        classifier.tta = saved_tta
    best = None
    for crop in range(min(classifier.input_shape), 15, -1):
        rebuilt = CNNClassifier(module, classifier.class_names, mean, std, crop, meta=meta)
        mine = rebuilt.predict_proba(check_images)
        gap = float(np.abs(mine - reference).mean())
        if best is None or gap < best[0]:
            best = (gap, crop, mine)
    gap, crop, mine = best
    agreement = float((mine.argmax(axis=1) == reference.argmax(axis=1)).mean())
    if agreement < MIN_AGREEMENT:
        raise ModelFileError(
            f"the network rebuilt from the ONNX file agrees with it on only {100 * agreement:.0f}% "
            "of the faces; adapt the .safetensors file it was exported from"
        )
    meta["preprocessing"] = {"mean": mean, "std": std, "crop": crop}
    rebuilt = CNNClassifier(module, classifier.class_names, mean, std, crop, meta=meta)
    return rebuilt, agreement
