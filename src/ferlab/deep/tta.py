"""Test-time augmentation: the views of each image whose predictions are averaged."""

from __future__ import annotations

import torch

from ferlab.deep.augment import center_crop

TTA_MODES = ("none", "flip", "tencrop")


def crop_views(x: torch.Tensor, crop: int, mode: str) -> list[torch.Tensor]:
    """(N, 1, H, W) images as the list of ``crop``-sized views that ``mode`` averages over.

    ``none``: the centre crop; ``flip``: it and its mirror image; ``tencrop``: the four corner crops
    and the centre crop, each also mirrored.
    """
    if mode not in TTA_MODES:
        raise ValueError(f"unknown test-time augmentation {mode!r}; choose one of {TTA_MODES}")
    centre = center_crop(x, crop)
    if mode == "none":
        return [centre]
    if mode == "flip":
        return [centre, centre.flip(-1)]
    h, w = x.shape[-2:]
    corners = [
        x[..., top : top + crop, left : left + crop]
        for top in (0, h - crop)
        for left in (0, w - crop)
    ]
    views = [*corners, centre]
    return views + [view.flip(-1) for view in views]
