"""Reading user photos of any common kind into RGB arrays, safely.

EXIF orientation is applied; grayscale, RGB, RGBA, palette, CMYK and 16-bit images are converted to
8-bit RGB; the pixel count is checked from the header before anything is decoded, so a
decompression bomb costs nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ferlab.data.images import MAX_PIXELS, load_image
from ferlab.errors import DataError

PhotoSource = str | os.PathLike | bytes | Image.Image | np.ndarray


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any Pillow mode; transparent parts become white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _from_array(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise DataError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")
    if array.dtype == np.uint16:
        array = (array.astype(np.float64) / 65535.0 * 255.0 + 0.5).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise DataError(f"an image array must be uint8 or uint16, got {array.dtype}")
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)
    if array.shape[2] == 4:
        alpha = array[..., 3:4].astype(np.float32) / 255.0
        return (array[..., :3] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(array)


def read_photo(source: PhotoSource, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An 8-bit RGB array (H, W, 3) from a path, encoded bytes, a Pillow image or an array.

    Arrays are (H, W) grayscale, (H, W, 3) RGB (not OpenCV's BGR) or (H, W, 4) RGBA, uint8 or
    uint16. Raises :class:`DataError` with one line for unreadable, truncated or oversized images.
    """
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, Image.Image):
        return np.asarray(_to_rgb(ImageOps.exif_transpose(source)))
    name = "image data" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes):
        path = Path(source)
        if not path.exists():
            raise DataError(f"{path}: no such file")
        if not path.is_file():
            raise DataError(f"{path}: not a regular file")
    try:
        with load_image(source, max_pixels) as image:
            return np.asarray(_to_rgb(ImageOps.exif_transpose(image)))
    except ValueError as exc:  # the same error type (too large, unknown format), named
        kind = type(exc) if isinstance(exc, DataError) else DataError
        raise kind(f"{name}: {exc}") from None
