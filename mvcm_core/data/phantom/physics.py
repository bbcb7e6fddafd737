"""From line integrals to a processed 12-bit radiograph (reference §1.3-§1.7).

Beer-Lambert at an effective 60 keV (mono), heel-effect ramp, anti-scatter grid, scatter as a
low-frequency veil by kernel superposition at 1/8 resolution (``SPR = 0.15 exp(0.19 tau)`` on the
water-equivalent thickness ``tau``, x0.2 with a grid), Gaussian-approximated Poisson quantum noise
from the detector dose, a two-component detector PSF, then the vendor-style processing that makes
chest films look like chest films: log, large-kernel dynamic-range compression, unsharp masking,
sigmoid tone curve from histogram percentiles, collimation and a lead side marker.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

MU_WATER = 0.206
PHOTONS_PER_MM2_PER_UGY = 3.0e4
QDE = 0.75


@dataclass(frozen=True)
class Acquisition:
    """Exposure and processing settings of one image (sampled per view and study)."""

    kvp: float = 120.0
    mas: float = 2.0
    dose_ugy: float = 2.5  # detector air kerma behind the lungs (AEC target)
    grid: bool = True
    heel: float = 0.04  # residual heel ramp after flat-field (top-to-bottom relative gain)
    drc: float = 0.45  # dynamic-range compression strength
    usm: float = 0.9  # unsharp-mask gain
    contrast: float = 1.0  # slope of the tone curve
    brightness: float = 0.0  # shift of the tone curve (fraction of the window)
    collimation: tuple[float, float, float, float] = (0.02, 0.02, 0.03, 0.03)  # top, bottom, left, right
    marker: str = "L"
    marker_corner: int = 1  # 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


def sample_acquisition(rng: np.random.Generator, view: str) -> Acquisition:
    """Random technique and processing for one view (lateral: higher kVp and mAs, tighter field)."""
    lateral = view == "LL"
    side_margin = rng.uniform(0.10, 0.2) if lateral else rng.uniform(0.0, 0.06)
    return Acquisition(
        kvp=float(rng.choice([110.0, 115.0, 120.0, 125.0])) + (5.0 if lateral else 0.0),
        mas=float(rng.uniform(1.2, 3.0) * (3.5 if lateral else 1.0)),
        dose_ugy=float(rng.uniform(1.5, 5.0)),
        grid=bool(rng.random() < 0.9),
        heel=float(rng.uniform(-0.06, 0.06)),
        drc=float(rng.uniform(0.6, 0.8)),
        usm=float(rng.uniform(0.6, 1.4)),
        contrast=float(rng.uniform(0.85, 1.2)),
        brightness=float(rng.uniform(-0.06, 0.06)),
        collimation=(float(rng.uniform(0.0, 0.05)), float(rng.uniform(0.0, 0.05)),
                     side_margin + float(rng.uniform(0, 0.03)), side_margin + float(rng.uniform(0, 0.03))),
        marker="L" if lateral else str(rng.choice(["L", "R"])),
        marker_corner=int(rng.integers(0, 2)),
    )


def _downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Block mean by ``factor`` (image side must be divisible)."""
    n = image.shape[0] // factor
    return image[: n * factor, : n * factor].reshape(n, factor, n, factor).mean(axis=(1, 3))  # [n, n]


def _upsample(image: np.ndarray, size: int) -> np.ndarray:
    return ndimage.zoom(image, size / image.shape[0], order=1, mode="nearest", grid_mode=True)


def scatter(primary: np.ndarray, path: np.ndarray, pixel_cm: float, grid: bool, lateral: bool) -> np.ndarray:
    """Scatter intensity for a primary image and its attenuation line integrals (same shape)."""
    factor = max(1, primary.shape[0] // 32)
    tau = ndimage.gaussian_filter(_downsample(path, factor) / MU_WATER, 3.0 / (pixel_cm * factor))
    spr = 0.15 * np.exp(0.19 * np.minimum(tau, 30.0)) * (0.2 if grid else 1.0) * (1.3 if lateral else 1.0)
    source = _downsample(primary, factor) * spr
    sigma = 4.0 / (pixel_cm * factor)
    veil = 0.7 * ndimage.gaussian_filter(source, sigma, mode="nearest") + 0.3 * ndimage.gaussian_filter(
        source, 2.5 * sigma, mode="nearest")
    return _upsample(veil, primary.shape[0]).astype(np.float32)


def _marker_mask(size: int, letter: str, corner: int, collimation) -> np.ndarray:
    """A small lead letter (1.5 cm high) near a corner of the exposed field."""
    height = max(6, size // 28)
    canvas = Image.new("L", (height * 2, height * 2), 0)
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([0, 0, height * 2 - 1, height * 2 - 1], outline=255, width=max(1, height // 8))
    draw.text((height // 2, height // 3), letter, fill=255, font_size=height)
    mask = np.zeros((size, size), np.float32)
    top = int(size * (collimation[0] + 0.04)) if corner < 2 else int(size * (1 - collimation[1] - 0.1))
    left = int(size * (collimation[2] + 0.05)) if corner % 2 == 0 else int(size * (1 - collimation[3] - 0.1))
    patch = np.asarray(canvas, np.float32) / 255.0
    rows, cols = min(patch.shape[0], size - top), min(patch.shape[1], size - left)
    mask[top:top + rows, left:left + cols] = patch[:rows, :cols]
    return mask


def expose(path: np.ndarray, pixel_cm: float, acq: Acquisition, rng: np.random.Generator, lateral: bool
           ) -> np.ndarray:
    """Detected signal (flat-field corrected, unattenuated = 1) from line integrals ``path [N, N]``."""
    size = path.shape[0]
    energy_scale = (120.0 / acq.kvp) ** 0.35  # softer beams attenuate a little more
    path = path * energy_scale
    primary = np.exp(-path).astype(np.float32)
    veil = scatter(primary, path, pixel_cm, acq.grid, lateral)
    detected = primary + veil
    heel = 1.0 + acq.heel * (np.linspace(-0.5, 0.5, size, dtype=np.float32)[:, None])
    detected = detected * heel
    # quantum noise: photons per pixel at the lung level (transmission ~0.1 there)
    photons_open = acq.dose_ugy * PHOTONS_PER_MM2_PER_UGY * QDE * (pixel_cm * 10.0) ** 2 / 0.1
    noise = rng.standard_normal(detected.shape).astype(np.float32)
    detected = detected + np.sqrt(np.maximum(detected, 1e-6) / photons_open) * noise
    blurred = 0.8 * ndimage.gaussian_filter(detected, max(0.35, 0.01 / pixel_cm)) + 0.2 * ndimage.gaussian_filter(
        detected, max(1.0, 0.08 / pixel_cm))  # CsI PSF + glare
    return np.maximum(blurred, 1e-5)


def process(detected: np.ndarray, pixel_cm: float, acq: Acquisition, marker: bool = True) -> np.ndarray:
    """Vendor-style processing to a display image in ``[0, 1]`` (attenuation bright, MONOCHROME2)."""
    size = detected.shape[0]
    log = -np.log(detected)  # "for processing" domain
    rows = np.arange(size)[:, None]
    cols = np.arange(size)[None, :]
    top, bottom, left, right = (int(round(c * size)) for c in acq.collimation)
    field = (rows >= top) & (rows < size - bottom) & (cols >= left) & (cols < size - right)
    if marker:
        log = log + 6.0 * _marker_mask(size, acq.marker, acq.marker_corner, acq.collimation)
    factor = max(1, size // 64)
    coarse = _downsample(log, factor)
    low = _upsample(ndimage.gaussian_filter(coarse, 3.5 / (pixel_cm * factor), mode="nearest"), size)
    inside = log[field]
    compressed = log - acq.drc * (low - float(np.median(inside)))
    detail = compressed - ndimage.gaussian_filter(compressed, 0.25 / pixel_cm)
    enhanced = compressed + acq.usm * detail
    body = field & (log > 0.8)  # exclude direct exposure (air) from the window
    values = enhanced[body] if body.sum() > 100 else enhanced[field]
    lo, hi = np.percentile(values, [0.5, 99.5])
    centre = lo + (0.42 + acq.brightness) * (hi - lo)
    width = (hi - lo) / (4.2 * acq.contrast)
    image = 1.0 / (1.0 + np.exp(-(enhanced - centre) / width))
    image = np.where(field, image, 1.0)  # collimated (unexposed) borders are white
    return image.astype(np.float32)


def to_stored(image: np.ndarray, bits: int = 12) -> np.ndarray:
    """Quantise a ``[0, 1]`` image to unsigned ``bits``-bit stored values (uint16)."""
    return np.round(np.clip(image, 0.0, 1.0) * (2**bits - 1)).astype(np.uint16)
