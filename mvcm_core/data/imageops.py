"""Small image operations shared by training and serving (numpy + Pillow, no torch)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

PIL_BLOCKS_KEPT = 4  # freed 16 MB image blocks Pillow keeps for reuse (its default keeps none)


def keep_pil_blocks(count: int = PIL_BLOCKS_KEPT) -> int:
    """Let Pillow reuse up to ``count`` freed 16 MB blocks instead of returning them to the OS.

    A full-size radiograph as a float image is ~14 MB. With Pillow's default every resize allocated it
    afresh and paid for it in page faults: in a profile of reading RG1 (1955×1841) at 128 px, 5.5 of
    14.8 ms went to zeroing fresh memory. Measured in fresh processes, interleaved with the pydicom + PIL
    baseline (``PILLOW_BLOCKS_MAX`` = 0 / 1 / 2 / 4): 21.7 / 18.9 / 15.2 / 13.5 ms. Costs at most
    ``count`` × 16 MB of retained memory. A ``PILLOW_BLOCKS_MAX`` environment variable (Pillow's own
    setting) wins. Returns the setting in force.
    """
    if "PILLOW_BLOCKS_MAX" not in os.environ and Image.core.get_blocks_max() < count:
        Image.core.set_blocks_max(count)
    return Image.core.get_blocks_max()


keep_pil_blocks()


def longest_side_shape(rows: int, cols: int, size: int) -> tuple[int, int]:
    """``(rows, cols)`` scaled so the longest side is ``size`` (aspect ratio kept, each side ≥ 1)."""
    scale = size / max(rows, cols)
    return max(1, round(rows * scale)), max(1, round(cols * scale))


def resize_longest(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a ``[rows, cols]`` float image so its longest side is ``size`` (aspect ratio kept).

    Downsampling is antialiased (Pillow's bilinear filter widens with the scale factor).
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    rows, cols = image.shape
    new_rows, new_cols = longest_side_shape(rows, cols, size)
    if (new_rows, new_cols) == (rows, cols):
        return image.astype(np.float32, copy=False)
    resized = Image.fromarray(image.astype(np.float32, copy=False), mode="F").resize(
        (new_cols, new_rows), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def resize_band(band: np.ndarray, size: int, full_shape: tuple[int, int], levels: int) -> np.ndarray:
    """Resize a JPEG 2000 low-pass band to what :func:`resize_longest` makes of the full ``[rows, cols]`` image.

    ``band`` is the full image with ``levels`` wavelet levels skipped. Its sample ``n`` is centred on
    full-resolution pixel ``2^levels · n``, not on the centre of its block, so the resampling box is
    shifted by ``(2^levels − 1) / 2`` full pixels; the output size follows ``full_shape``.
    """
    rows, cols = full_shape
    new_rows, new_cols = longest_side_shape(rows, cols, size)  # what resize_longest makes of the full image
    step = 2 ** levels
    start = 0.5 - 0.5 / step  # full edge coordinate x sits at band coordinate (x - 0.5) / step + 0.5
    band_rows, band_cols = band.shape
    box = (start, start, min((cols - 0.5) / step + 0.5, band_cols), min((rows - 0.5) / step + 0.5, band_rows))
    resized = Image.fromarray(band.astype(np.float32, copy=False), mode="F").resize(
        (new_cols, new_rows), Image.Resampling.BILINEAR, box=box)
    return np.asarray(resized, dtype=np.float32)


def pad_to_square(image: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Pad a ``[rows, cols]`` image symmetrically to ``[n, n]`` with ``fill`` (no stretching)."""
    rows, cols = image.shape
    side = max(rows, cols)
    out = np.full((side, side), fill, dtype=np.float32)
    top, left = (side - rows) // 2, (side - cols) // 2
    out[top:top + rows, left:left + cols] = image
    return out
