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


# Random erasing's rectangles (Zhong et al. 2017): 2-33% of the image, aspect ratio 0.3-3.3.
ERASE_AREA = (0.02, 0.33)
ERASE_ASPECT = (0.3, 3.3)


def random_erase(x: torch.Tensor, p: float, *, generator: torch.Generator) -> torch.Tensor:
    """(N, C, H, W) images with, for each with probability ``p``, one rectangle of noise.

    Random erasing (Zhong et al. 2017): a rectangle of ``ERASE_AREA`` of the image's area whose
    height / width ratio is drawn log-uniformly from the part of ``ERASE_ASPECT`` where it fits,
    at a uniform position, filled with standard normal noise (the inputs are standardised, so the
    noise has the training pixels' mean and spread). Sides are rounded to whole pixels. Random
    numbers come from the CPU ``generator``.
    """
    n, _, height, width = x.shape
    u = torch.rand(n, 5, generator=generator, dtype=torch.float64)
    noise = torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
    low, high = ERASE_AREA
    area = height * width * (low + (high - low) * u[:, 1])
    # height = sqrt(area * ratio) <= H and width = sqrt(area / ratio) <= W bound the ratio.
    log_low = torch.clamp(torch.log(area / width**2), min=math.log(ERASE_ASPECT[0]))
    log_high = torch.clamp(torch.log(height**2 / area), max=math.log(ERASE_ASPECT[1]))
    ratio = torch.exp(log_low + (log_high - log_low) * u[:, 2])
    h = torch.sqrt(area * ratio).round().clamp(1, height).long()
    w = torch.sqrt(area / ratio).round().clamp(1, width).long()
    top = (u[:, 3] * (height - h + 1)).floor().long()
    left = (u[:, 4] * (width - w + 1)).floor().long()
    rows, cols = torch.arange(height), torch.arange(width)
    inside_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None])  # (N, H)
    inside_cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])  # (N, W)
    mask = inside_rows[:, :, None] & inside_cols[:, None, :] & (u[:, 0] < p)[:, None, None]
    return torch.where(mask[:, None].to(x.device), noise, x)


def sample_beta(alpha: float, generator: torch.Generator) -> float:
    """One draw from Beta(alpha, alpha), by inverting its CDF at a uniform from ``generator``."""
    from scipy.special import betaincinv

    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    return float(betaincinv(alpha, alpha, u))


def cutmix_box(
    height: int, width: int, lam: float, generator: torch.Generator
) -> tuple[int, int, int, int]:
    """CutMix's box (top, bottom, left, right): ``1 - lam`` of the area around a uniform centre,
    clipped to the image (Yun et al. 2019)."""
    u, v = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
    cy, cx = u * height, v * width
    side = math.sqrt(1.0 - lam)
    h, w = round(height * side), round(width * side)
    top, left = max(0, round(cy - h / 2)), max(0, round(cx - w / 2))
    return top, min(height, round(cy + h / 2)), left, min(width, round(cx + w / 2))


def mix_batch(
    x: torch.Tensor, *, mixup: float, cutmix: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """A batch (N, C, H, W) mixed with itself reversed; returns it, the partners' order and lam.

    Image ``i`` is mixed with image ``N - 1 - i`` (the batch is already in random order) by one
    ``lam ~ Beta(alpha, alpha)`` for the whole batch: mixup (Zhang et al. 2018) blends them,
    ``lam * x + (1 - lam) * partner``; CutMix pastes a box of the partner covering ``1 - lam`` of
    the image, and ``lam`` becomes the share of the image left. With both alphas > 0 each batch
    uses one of the two, chosen by a coin flip; with both 0 the batch is returned as it is (lam 1)
    and no random numbers are drawn. The loss is ``lam * CE(labels) + (1 - lam) *
    CE(labels[partners])``.
    """
    partners = torch.arange(x.shape[0] - 1, -1, -1, device=x.device)
    if mixup <= 0 and cutmix <= 0:
        return x, partners, 1.0
    use_cutmix = cutmix > 0 and (mixup <= 0 or float(torch.rand((), generator=generator)) < 0.5)
    lam = sample_beta(cutmix if use_cutmix else mixup, generator)
    if not use_cutmix:
        return lam * x + (1.0 - lam) * x[partners], partners, lam
    height, width = x.shape[-2:]
    top, bottom, left, right = cutmix_box(height, width, lam, generator)
    mixed = x.clone()
    mixed[..., top:bottom, left:right] = x[partners][..., top:bottom, left:right]
    return mixed, partners, 1.0 - (bottom - top) * (right - left) / (height * width)
