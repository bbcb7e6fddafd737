"""The one preprocessing path from a windowed view to a model input (numpy, no torch).

Training data and served uploads both go through :func:`view_to_input`, so they cannot drift:
display image in [0, 1] (1 = white) → resize the longest side to ``size`` (antialiased) → pad to a
square with black → uint8. The model normalises ``(x / 255 - mean) / std``.
"""

from __future__ import annotations

import numpy as np

from mvcm_core.data.imageops import pad_to_square, resize_longest
from mvcm_core.data.windowing import to_uint8


def view_to_input(display: np.ndarray, size: int) -> np.ndarray:
    """``[rows, cols]`` display image in [0, 1] → ``[size, size]`` uint8 model input."""
    return to_uint8(pad_to_square(resize_longest(display, size), fill=0.0))


def normalise(pixels: np.ndarray, mean: float, std: float) -> np.ndarray:
    """uint8 ``[..., H, W]`` → float32 normalised."""
    return (pixels.astype(np.float32) / 255.0 - mean) / std
