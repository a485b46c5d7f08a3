"""A contact sheet: face crops in a grid, each captioned, as one PNG (Pillow only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TILE = 144  # pixels of each face on the sheet
CAPTION = 30  # pixels under each face for its two caption lines


def contact_sheet(
    crops: np.ndarray, captions: list[tuple[str, str]], path: str | Path, *, columns: int = 6
) -> Path:
    """Write the uint8 grayscale ``crops`` (N, H, W), enlarged, in rows of ``columns``, each
    with its two caption lines under it; with no crop, a sheet that says so."""
    font = ImageFont.load_default()
    path = Path(path)
    if len(crops) == 0:
        sheet = Image.new("RGB", (TILE * 3, CAPTION * 2), "white")
        ImageDraw.Draw(sheet).text((8, 8), "no mistakes", fill="black", font=font)
        sheet.save(path)
        return path
    columns = max(1, min(columns, len(crops)))
    rows = -(-len(crops) // columns)
    sheet = Image.new("RGB", (columns * TILE, rows * (TILE + CAPTION)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (crop, (first, second)) in enumerate(zip(crops, captions, strict=True)):
        x, y = (i % columns) * TILE, (i // columns) * (TILE + CAPTION)
        face = Image.fromarray(np.asarray(crop, dtype=np.uint8)).convert("RGB")
        sheet.paste(face.resize((TILE, TILE), Image.Resampling.NEAREST), (x, y))
        draw.text((x + 3, y + TILE + 2), first[:24], fill="black", font=font)
        draw.text((x + 3, y + TILE + 15), second[:24], fill="firebrick", font=font)
    sheet.save(path)
    return path
