"""Small image operations shared by training and serving (numpy + Pillow, no torch)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_longest(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a ``[rows, cols]`` float image so its longest side is ``size`` (aspect ratio kept).

    Downsampling is antialiased (Pillow's bilinear filter widens with the scale factor).
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    rows, cols = image.shape
    scale = size / max(rows, cols)
    new_rows, new_cols = max(1, round(rows * scale)), max(1, round(cols * scale))
    if (new_rows, new_cols) == (rows, cols):
        return image.astype(np.float32, copy=False)
    resized = Image.fromarray(image.astype(np.float32, copy=False), mode="F").resize(
        (new_cols, new_rows), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def pad_to_square(image: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Pad a ``[rows, cols]`` image symmetrically to ``[n, n]`` with ``fill`` (no stretching)."""
    rows, cols = image.shape
    side = max(rows, cols)
    out = np.full((side, side), fill, dtype=np.float32)
    top, left = (side - rows) // 2, (side - cols) // 2
    out[top:top + rows, left:left + cols] = image
    return out
