"""Batch augmentation on tensors: random crop, horizontal flip, rotation and scale in one warp."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def normalize(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 (N, H, W) images as float (N, 1, H, W), standardised."""
    return ((images.float() - mean) / std).unsqueeze(1)


def center_crop(x: torch.Tensor, crop: int) -> torch.Tensor:
    """The central ``crop`` x ``crop`` window of (N, C, H, W) images."""
    top = (x.shape[-2] - crop) // 2
    left = (x.shape[-1] - crop) // 2
    return x[..., top : top + crop, left : left + crop]


def random_warp(
    x: torch.Tensor,
    crop: int,
    *,
    flip: bool,
    rotate: float,
    scale: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Random ``crop``-sized windows of (N, 1, H, W) images, flipped, rotated and scaled at random.

    Random numbers come from the CPU ``generator`` so runs repeat on any device.
    """
    n, size = x.shape[0], x.shape[-1]
    u = torch.rand(n, 5, generator=generator).to(x.device)
    window = crop / size
    angle = (u[:, 0] * 2 - 1) * math.radians(rotate)
    zoom = window * (1 + (u[:, 1] * 2 - 1) * scale)
    mirror = torch.where(u[:, 2] < 0.5, -1.0, 1.0) if flip else torch.ones(n, device=x.device)
    shift = (1 - window) * (u[:, 3:5] * 2 - 1)
    cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
    theta = torch.stack(
        [
            torch.stack([cos * mirror, -sin, shift[:, 0]], dim=1),
            torch.stack([sin * mirror, cos, shift[:, 1]], dim=1),
        ],
        dim=1,
    ).to(x.dtype)
    grid = F.affine_grid(theta, [n, x.shape[1], crop, crop], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
