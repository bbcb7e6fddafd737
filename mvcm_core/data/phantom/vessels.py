"""Pulmonary vessel trees and central airways as analytic tube segments.

Vessel trees grow by recursive bisection of a cloud of target points sampled inside each lung: a branch
runs from its parent's tip half-way towards the centroid of its points, the points are split at the
median of their widest axis and each half gets a child whose radius follows Murray's law for the flow
it serves (``r_child = r_parent (n_child / n_parent)^(1/3)``). The trees are therefore space filling,
taper from ~1.2 cm at the hila to ~1 mm at the periphery (where markings fade) and are thicker at the
bases (upright perfusion gradient). Arteries start at the hila, veins at the left atrium.
"""

from __future__ import annotations

import numpy as np

from mvcm_core.data.phantom.anatomy import MU, Anatomy, vertebra_z
from mvcm_core.data.phantom.primitives import Tubes, polyline_tubes
from mvcm_core.data.phantom.volume import PhantomVolume

VESSEL_MU = MU["blood"] - MU["lung"]
MIN_RADIUS_CM = 0.045


def _lung_points(volume: PhantomVolume, side: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``[count, 3]`` random points inside one lung (away from the pleura)."""
    zi, yi, xi = np.nonzero(volume.lung > 0.9)
    grid = volume.grid
    x = grid.origin_cm[0] + xi * grid.voxel_cm
    keep = np.flatnonzero(np.sign(x) == side)
    pick = rng.choice(keep, size=min(count, len(keep)), replace=False)
    jitter = rng.uniform(-0.5, 0.5, (len(pick), 3)) * grid.voxel_cm
    return np.stack([x[pick], grid.origin_cm[1] + yi[pick] * grid.voxel_cm,
                     grid.origin_cm[2] + zi[pick] * grid.voxel_cm], axis=1) + jitter


def _grow(root: np.ndarray, points: np.ndarray, radius: float, rng: np.random.Generator,
          out: list[tuple[np.ndarray, np.ndarray, float]]) -> None:
    """Append ``(start, end, radius)`` segments of the subtree serving ``points`` (iterative)."""
    stack = [(root, points, radius)]
    while stack:
        start, pts, r = stack.pop()
        if len(pts) < 2 or r < MIN_RADIUS_CM:
            continue
        target = pts.mean(axis=0)
        step = (target - start) * 0.55
        length = float(np.linalg.norm(step))
        if length < 0.25:
            step = step / max(length, 1e-6) * 0.25
        end = start + step + rng.normal(0.0, 0.08, 3) * length
        mid = 0.5 * (start + end) + rng.normal(0.0, 0.06, 3) * length  # slight tortuosity
        out.append((start, mid, r))
        out.append((mid, end, r * 0.97))
        spread = pts.max(axis=0) - pts.min(axis=0)
        order = np.argsort(pts[:, int(np.argmax(spread))])
        halves = (pts[order[: len(pts) // 2]], pts[order[len(pts) // 2:]])
        for half in halves:
            stack.append((end, half, r * (len(half) / len(pts)) ** (1.0 / 3.0)))


def vessel_segments(anat: Anatomy, volume: PhantomVolume, points_per_lung: int = 4000
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arterial and venous trees of both lungs: ``starts [S,3]``, ``ends [S,3]``, ``radii [S]``."""
    rng = np.random.default_rng(np.random.SeedSequence([anat.seed, 0x7E5]))
    segments: list[tuple[np.ndarray, np.ndarray, float]] = []
    s = anat.scale
    for side in (-1, 1):
        pts = _lung_points(volume, side, points_per_lung, rng)
        hilum = anat.hilum(side) + np.array([side * 1.2, 0.3, -0.6]) * s
        atrium = np.array([side * 3.2 * s, 1.4 * s, -1.4 * s])
        for root, radius, share in ((hilum, 0.72, 0.55), (atrium, 0.62, 0.45)):
            subset = pts[rng.random(len(pts)) < share]
            _grow(root, subset, radius * s * anat.hila_scale ** 0.5, rng, segments)
    starts = np.array([seg[0] for seg in segments])
    ends = np.array([seg[1] for seg in segments])
    radii = np.array([seg[2] for seg in segments])
    return starts, ends, radii


def vessel_tubes(starts: np.ndarray, ends: np.ndarray, radii: np.ndarray, anat: Anatomy,
                 zone_gain: tuple[float, float] = (0.0, 0.0), keep: np.ndarray | None = None) -> Tubes:
    """Tubes of vessel segments with the upright calibre gradient.

    Args:
        zone_gain: extra relative calibre of the upper and lower zones (cephalisation in edema is
            ``(+0.4, -0.1)``); the normal upright gradient is always applied.
        keep: optional boolean mask of segments to draw (pruning, pneumothorax).
    """
    mid_z = 0.5 * (starts[:, 2] + ends[:, 2])
    lower = np.clip((2.0 - mid_z) / 10.0, 0.0, 1.0)
    upper = np.clip((mid_z - 2.0) / 10.0, 0.0, 1.0)
    gain = (1.0 + 0.18 * lower - 0.1 * upper + zone_gain[0] * upper + zone_gain[1] * lower) * anat.vessel_scale
    r = radii * gain
    if keep is not None:
        starts, ends, r = starts[keep], ends[keep], r[keep]
    vec = ends - starts
    length = np.maximum(np.linalg.norm(vec, axis=1), 1e-6)
    axis = vec / length[:, None]
    normal = np.cross(axis, np.array([0.3, 0.5, 0.8]))
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)
    return Tubes(starts, axis, length, normal, r, r, np.full(len(r), VESSEL_MU))


def airway_tubes(anat: Anatomy) -> Tubes:
    """Trachea, main and lobar bronchi (air lumen in soft tissue; negative attenuation)."""
    s = anat.scale
    carina = np.array([0.2 * s, 0.9 * s, vertebra_z(5) - 0.2])
    trachea = np.array([[0.0, -1.6 * s, 20.0], [0.0, -1.2 * s, 14.0], [-0.35 * s, -0.4 * s, 9.0],
                        [-0.15 * s, 0.4 * s, 6.5], carina])
    right = np.stack([carina, carina + np.array([-2.4, 0.5, -1.6]) * s, carina + np.array([-3.0, 0.9, -4.6]) * s])
    left = np.stack([carina, carina + np.array([2.3, 0.6, -1.4]) * s, carina + np.array([4.2, 1.1, -3.2]) * s])
    lumen = -MU["soft"]
    parts = [polyline_tubes(trachea, 0.85 * s, 0.8 * s, lumen, up=(1.0, 0.0, 0.0)),
             polyline_tubes(right, np.array([0.68, 0.6, 0.5]) * s, np.array([0.68, 0.6, 0.5]) * s, lumen),
             polyline_tubes(left, np.array([0.62, 0.55, 0.45]) * s, np.array([0.62, 0.55, 0.45]) * s, lumen)]
    lobar = [(right[1], [-1.2, -0.4, 2.2]), (right[2], [-0.8, -1.2, -2.0]), (right[2], [-1.0, 1.0, -2.4]),
             (left[1], [1.0, -0.6, 2.0]), (left[2], [0.8, 1.2, -2.4]), (left[2], [1.0, -1.0, -1.6])]
    for origin, direction in lobar:
        end = origin + np.array(direction) * s
        parts.append(polyline_tubes(np.stack([origin, end]), 0.32 * s, 0.32 * s, -MU["lung"] * 0.5))
    return Tubes.concat(parts)
