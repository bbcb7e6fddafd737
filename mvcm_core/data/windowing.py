"""From modality values to a displayable image: VOI windows, VOI LUTs, presets, polarity (numpy only).

Order of operations (DICOM PS3.3 C.11 / C.7.6.3.1.2): stored values → modality LUT (rescale) →
VOI (window or LUT) → *then* MONOCHROME1 inversion within the output range. Inverting before
windowing is wrong (the window centre would be mirrored); this module never does it.

Every function returns float32 images in ``[0, 1]`` where 1 is white (bones white on a chest film).
Projection radiographs have no calibrated unit, so the generic presets (``lung``, ``mediastinum``,
``bone``) are percentile windows defined in *display* polarity and mapped back to stored polarity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Generic radiograph presets: (low, high) percentiles of display brightness (0 = darkest).
PERCENTILE_PRESETS: dict[str, tuple[float, float]] = {
    "auto": (0.5, 99.5),
    "lung": (1.0, 70.0),  # stretch the dark (aerated) range
    "mediastinum": (25.0, 99.5),  # stretch the bright soft-tissue range
    "bone": (50.0, 99.9),  # stretch the brightest range: bones and devices
}
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


@dataclass(frozen=True)
class WindowPreset:
    """A named way to map modality values to display values.

    Attributes:
        name: shown to the user (the file's own explanation for file windows).
        kind: ``window`` (centre/width), ``voi_lut`` (the file's VOI LUT number ``lut_index``),
            ``percentile`` (generic preset) or ``full`` (the full stored range).
        center: window centre (``window`` only).
        width: window width (``window`` only).
        function: VOI LUT function for windows: LINEAR, LINEAR_EXACT or SIGMOID.
        lut_index: which item of the VOI LUT Sequence (``voi_lut`` only).
        low_pct: low percentile (``percentile`` only).
        high_pct: high percentile (``percentile`` only).
    """

    name: str
    kind: str
    center: float = 0.0
    width: float = 1.0
    function: str = "LINEAR"
    lut_index: int = 0
    low_pct: float = 0.0
    high_pct: float = 100.0


def generic_presets() -> list[WindowPreset]:
    """The percentile presets every image offers, ``auto`` first."""
    return [WindowPreset(name, "percentile", low_pct=lo, high_pct=hi) for name, (lo, hi) in PERCENTILE_PRESETS.items()]


def apply_window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Apply a VOI window (PS3.3 C.11.2.1.2) and return float32 in [0, 1].

    Args:
        values: modality values, any shape.
        center: window centre.
        width: window width (> 0; ≥ 1 for LINEAR).
        function: LINEAR, LINEAR_EXACT or SIGMOID.
    """
    function = (function or "LINEAR").upper()
    if function not in VOI_FUNCTIONS:
        function = "LINEAR"
    values = values.astype(np.float32, copy=False)
    if function == "SIGMOID":
        width = max(float(width), 1e-6)
        return (1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))).astype(np.float32)
    if function == "LINEAR":
        width = max(float(width), 1.0)
        low = center - 0.5 - (width - 1.0) / 2.0
        span = width - 1.0
    else:  # LINEAR_EXACT
        width = max(float(width), 1e-6)
        low = center - width / 2.0
        span = width
    out = np.subtract(values, np.float32(low), dtype=np.float32)  # the one full-size allocation
    out *= np.float32(1.0 / max(span, 1e-6))
    return np.clip(out, 0.0, 1.0, out=out)


def apply_lut(values: np.ndarray, descriptor: tuple[int, int, int], lut: np.ndarray) -> np.ndarray:
    """Apply a VOI LUT (descriptor = entries, first mapped value, bits) and return float32 in [0, 1]."""
    entries, first_mapped, bits = (int(v) for v in descriptor)
    lut = np.asarray(lut, dtype=np.float32).ravel()
    if lut.size == 0:
        raise ValueError("empty VOI LUT")
    entries = entries or 65536  # 0 means 2**16 entries (PS3.3 C.11.2.1.1)
    lut = lut[:entries]
    # index into the LUT: values below the first mapped value take LUT[0], above take LUT[-1]
    index = np.clip(np.rint(values - first_mapped), 0, lut.size - 1).astype(np.int64)
    out_max = max(float(2 ** min(max(bits, 1), 16) - 1), float(lut.max()))
    out_min = min(0.0, float(lut.min()))
    return ((lut[index] - out_min) / max(out_max - out_min, 1e-6)).astype(np.float32)


def percentile_window(values: np.ndarray, low_pct: float, high_pct: float, inverted: bool) -> tuple[float, float]:
    """Stored-polarity (low, high) bounds for display-brightness percentiles.

    When the display is inverted (MONOCHROME1), bright display means low stored values, so the
    percentiles are mirrored before they are taken.
    """
    # subsample for speed: percentiles of every 4th pixel in each direction are plenty
    sample = values[::4, ::4] if values.ndim == 2 and min(values.shape) >= 64 else values
    lo_pct, hi_pct = (100.0 - high_pct, 100.0 - low_pct) if inverted else (low_pct, high_pct)
    low, high = np.percentile(sample, [lo_pct, hi_pct])
    if not np.isfinite(low) or not np.isfinite(high) or high <= low:
        low, high = float(np.min(sample)), float(np.max(sample))
    return float(low), float(max(high, low + 1e-3))


def to_display(
    values: np.ndarray,
    preset: WindowPreset,
    *,
    inverted: bool,
    stored_range: tuple[float, float] | None = None,
    voi_lut: tuple[tuple[int, int, int], np.ndarray] | None = None,
) -> np.ndarray:
    """Map modality values to a display image in [0, 1] (1 = white), polarity applied last.

    Args:
        values: ``[rows, cols]`` modality values (after rescale slope/intercept).
        preset: how to window.
        inverted: True for MONOCHROME1 (minimum displayed white); applied *after* the VOI step.
        stored_range: (min, max) representable modality value, for the ``full`` preset.
        voi_lut: (descriptor, lut data) for a ``voi_lut`` preset.
    """
    if preset.kind == "window":
        out = apply_window(values, preset.center, preset.width, preset.function)
    elif preset.kind == "voi_lut":
        if voi_lut is None:
            raise ValueError(f"preset {preset.name!r} needs the file's VOI LUT")
        out = apply_lut(values, *voi_lut)
    elif preset.kind == "full" and stored_range is not None:
        low, high = stored_range
        out = apply_window(values, (low + high) / 2.0, high - low, "LINEAR_EXACT")
    else:
        low, high = percentile_window(values, preset.low_pct, preset.high_pct, inverted)
        out = apply_window(values, (low + high) / 2.0, high - low, "LINEAR_EXACT")
    if inverted:
        out = np.subtract(1.0, out, out=out)  # invert within the output range, after VOI
    return out


def to_uint8(display: np.ndarray) -> np.ndarray:
    """[0, 1] float display image → uint8 (for PNG)."""
    return np.clip(np.rint(display * 255.0), 0, 255).astype(np.uint8)
