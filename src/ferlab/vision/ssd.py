"""Decoding MediaPipe's SSD face detectors: their anchors, boxes, landmarks and scores, and
the weighted non-maximum suppression that merges overlapping detections."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RAW_SCORE_LIMIT = 80.0  # MediaPipe clips the logits before the sigmoid
SUPPRESSION_IOU = 0.3  # MediaPipe's weighted NMS threshold


@dataclass(frozen=True)
class Network:
    """One of MediaPipe's BlazeFace networks: its ONNX file in ``ferlab/assets``, input side and
    anchor layout (SSD strides, with 2 anchors per cell and layer when ``paired``)."""

    file: str
    side: int
    strides: tuple[int, ...]
    paired: bool


def anchor_centres(network: Network) -> np.ndarray:
    """The anchors' centres (K, 2) as (x, y) fractions of the square, in the network's order:
    MediaPipe's SSD anchors, where layers of one stride share a grid and each adds its anchors
    to every cell."""
    centres, strides = [], list(network.strides)
    while strides:
        stride, layers = strides[0], 0
        while strides and strides[0] == stride:
            strides.pop(0)
            layers += 1
        per_cell = layers * (2 if network.paired else 1)
        cells = network.side // stride
        ys, xs = np.mgrid[0:cells, 0:cells]
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], -1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(centres).astype(np.float32)


def decode(raw: np.ndarray, logits: np.ndarray, anchors: np.ndarray, side: int):
    """Boxes (N, K, 4) as x0, y0, x1, y1, landmarks (N, K, 6, 2) and scores (N, K), all as
    fractions of the square, from the network's outputs ``raw`` (N, K, 16) and ``logits``
    (N, K, 1) and the anchors' centres (K, 2)."""
    offsets = raw / side
    centre = offsets[..., 0:2] + anchors
    half = offsets[..., 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=-1)
    landmarks = offsets[..., 4:16].reshape(*raw.shape[:2], 6, 2) + anchors[:, None, :]
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits[..., 0], -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)))
    return boxes, landmarks, scores


def box_iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Intersection over union of one x0, y0, x1, y1 box (4,) with each of ``others`` (M, 4)."""
    ix = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def weighted_nms(
    boxes: np.ndarray, landmarks: np.ndarray, scores: np.ndarray, iou: float = SUPPRESSION_IOU
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's weighted non-maximum suppression: the best-scoring box and every box
    overlapping it by more than ``iou`` become one detection, their boxes (M, 4) and landmarks
    (M, 6, 2) averaged with the scores as weights; the detection keeps the best score."""
    order = np.argsort(-scores, kind="stable")
    boxes, landmarks, scores = boxes[order], landmarks[order], scores[order]
    kept = []
    remaining = np.ones(len(scores), bool)
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        group = remaining & (box_iou(boxes[i], boxes) > iou)
        group[i] = True
        remaining &= ~group
        weights = scores[group][:, None]
        box = (boxes[group] * weights).sum(0) / weights.sum()
        points = (landmarks[group] * weights[:, :, None]).sum(0) / weights.sum()
        kept.append((box, points, float(scores[i])))
    return kept
