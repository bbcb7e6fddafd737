"""Attention heatmaps drawn onto each view (numpy + a matplotlib colour map).

The Predictor's attention grid covers the *model input*: the view resized so its longest side fits
and padded symmetrically to a square (``mvcm_core.data.transforms.view_to_input``). So the grid is
upsampled onto the padded square of the display image and the padding is cropped away again.
Intensities are scaled by the largest cell over *all* views, so a view the model barely looked at
stays grey instead of being stretched to full colour. The colour is blended per pixel with
``alpha = opacity × heat``: where the model did not look the radiograph stays untouched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

COLORMAP = "turbo"
DEFAULT_OPACITY = 0.45
OVERLAY_MAX_SIDE = 512


def colormap(values: np.ndarray, name: str = COLORMAP) -> np.ndarray:
    """``[H, W]`` values in [0, 1] → ``[H, W, 3]`` float RGB in [0, 1]."""
    from matplotlib import colormaps

    return colormaps[name](np.clip(values, 0.0, 1.0))[..., :3].astype(np.float32)


def upsample_grid(grid: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """A ``[g, g]`` grid over the padded square → ``[rows, cols]`` (bilinear, padding cropped)."""
    grid = np.asarray(grid, dtype=np.float32)
    if grid.ndim != 2 or grid.shape[0] != grid.shape[1]:
        raise ValueError(f"expected a square grid, got shape {grid.shape}")
    side = max(rows, cols)
    square = np.asarray(Image.fromarray(grid, mode="F").resize((side, side), Image.Resampling.BILINEAR))
    top, left = (side - rows) // 2, (side - cols) // 2
    return square[top : top + rows, left : left + cols]


def blend(gray: np.ndarray, heat: np.ndarray, opacity: float) -> np.ndarray:
    """Alpha-blend a coloured heat map over a grayscale image, per pixel ``alpha = opacity × heat``.

    Args:
        gray: ``[H, W]`` uint8 (or float in [0, 1]) display image.
        heat: ``[H, W]`` values in [0, 1].
        opacity: 0 = the image only; 1 = pure colour where ``heat`` is 1.

    Returns:
        ``[H, W, 3]`` uint8 RGB.
    """
    if gray.shape != heat.shape:
        raise ValueError(f"image {gray.shape} and heat map {heat.shape} differ in shape")
    heat = np.clip(heat, 0.0, 1.0).astype(np.float32)
    alpha = float(np.clip(opacity, 0.0, 1.0)) * heat[..., None]  # [H, W, 1]
    base = gray.astype(np.float32) / 255.0 if gray.dtype == np.uint8 else gray.astype(np.float32)
    rgb = np.repeat(base[..., None], 3, axis=-1)
    out = (1.0 - alpha) * rgb + alpha * colormap(heat)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def overlay_views(
    images: Sequence[np.ndarray],
    labels: Sequence[str],
    maps: Mapping[str, Sequence[Sequence[float]]],
    opacity: float = DEFAULT_OPACITY,
) -> list[tuple[np.ndarray, str]]:
    """(RGB overlay, caption) per view that has an attention map.

    Args:
        images: uint8 ``[H, W]`` display image per view.
        labels: the views' names as the Predictor gives them (``mvcm_core.inference.view_names``).
        maps: the Answer's ``attention_maps``.
        opacity: heat map opacity in [0, 1].

    A view without a map (not fed to the model) gets none: its caption says so and the bare image
    is shown.
    """
    peak = max((float(np.max(grid)) for grid in maps.values() if np.size(grid)), default=0.0)
    seen: set[str] = set()
    out = []
    for number, (image, label) in enumerate(zip(images, labels), start=1):
        grid = maps.get(label)
        if grid is None or label in seen:
            rgb = np.repeat(image[..., None], 3, axis=-1)
            out.append((rgb, f"view {number}: {label} (no attention map)"))
            continue
        seen.add(label)
        heat = upsample_grid(np.asarray(grid), *image.shape) / max(peak, 1e-12)
        share = float(np.sum(grid))
        out.append((blend(image, heat, opacity), f"view {number}: {label} ({share:.0%} of the attention)"))
    return out


def save_png(image: np.ndarray, path: str) -> str:
    """Write an image as PNG and return the path."""
    Image.fromarray(image).save(path, format="PNG")
    return path
