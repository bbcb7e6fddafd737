"""Voxelised large organs of an :class:`~mvcm_core.data.phantom.anatomy.Anatomy` (3 mm by default).

The volume holds the attenuation ``mu`` (1/cm at 60 keV) of skin, fat, muscle, lungs (with domes,
costophrenic recesses and an upright density gradient plus 3-D correlated texture), the heart and
great vessels, hilar arteries, mediastinal soft tissue, stomach and bowel gas and breasts, together
with the lung fraction of every voxel and a lobe label (used to place findings). Bones, airways,
pulmonary vessels and devices are analytic (see :mod:`mvcm_core.data.phantom.skeleton`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mvcm_core.data.phantom.anatomy import LUNG_MU_PER_DENSITY, MU, Anatomy
from mvcm_core.data.phantom.geometry import VoxelGrid
from mvcm_core.data.phantom.primitives import (
    box_coords,
    box_slices,
    ellipsoid_sd,
    occupancy,
    paint_ellipsoid,
    paint_polyline,
    rotation_matrix,
)

LOBES = {1: "RUL", 2: "RML", 3: "RLL", 4: "LUL", 5: "lingula", 6: "LLL"}


@dataclass
class PhantomVolume:
    """Voxel maps of one anatomy: ``mu`` and ``lung`` are ``[nz, ny, nx]`` float32, ``lobe`` uint8."""

    grid: VoxelGrid
    mu: np.ndarray
    lung: np.ndarray
    lobe: np.ndarray


def default_grid(voxel_cm: float = 0.3) -> VoxelGrid:
    """The grid covering x -22..22, y -21..16, z -25..20 cm."""
    lo, hi = np.array([-22.0, -21.0, -25.0]), np.array([22.0, 16.0, 20.0])
    shape_xyz = np.floor((hi - lo) / voxel_cm).astype(int) + 1
    return VoxelGrid(tuple(lo), (int(shape_xyz[2]), int(shape_xyz[1]), int(shape_xyz[0])), voxel_cm)


def _superellipse_sd(x, y, xc, yc, a, b, power: float) -> np.ndarray:
    """Approximate signed distance to a superellipse column ``|dx/a|^p + |dy/b|^p <= 1``."""
    dx, dy = x - xc, y - yc
    a, b = np.maximum(a, 1e-3), np.maximum(b, 1e-3)
    f = (np.abs(dx / a) ** power + np.abs(dy / b) ** power) ** (1.0 / power)
    return np.sqrt(dx * dx + dy * dy) * (1.0 - 1.0 / np.maximum(f, 1e-6))


def _body(anat: Anatomy, grid: VoxelGrid, mu: np.ndarray) -> None:
    x, y, z = box_coords(grid, (slice(None),) * 3)
    width, depth = anat.body_axes(z)
    skin = occupancy(_superellipse_sd(x, y, 0.0, 0.0, width, depth, 2.4), grid.voxel_cm)
    inner = occupancy(_superellipse_sd(x, y, 0.0, 0.0, width - anat.fat_cm, depth - 0.6 * anat.fat_cm, 2.4),
                      grid.voxel_cm)
    mu[:] = skin * (MU["fat"] + inner * (MU["soft"] - MU["fat"]))
    s = anat.scale
    for side in (-1, 1):  # shoulder girdle soft tissue (deltoid, trapezius)
        paint_ellipsoid(mu, grid, [side * 0.86 * anat.half_width, 1.5 * s, 12.8 * s], [5.0 * s, 4.5 * s, 3.6 * s],
                        MU["soft"])
        if anat.breast_cm > 1.5:
            _, front = anat.body_axes(np.array(-4.0 * s))
            centre = [side * 9.0 * s, -float(front) + 0.5, -4.5 * s]
            radii = [6.0 * s, anat.breast_cm + 0.5, 5.2 * s]
            paint_ellipsoid(mu, grid, centre, radii, 0.5 * (MU["fat"] + MU["soft"]))


def _lungs(anat: Anatomy, grid: VoxelGrid, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Lung fraction (before the mediastinum is carved) and lobe labels."""
    x, y, z = box_coords(grid, (slice(None),) * 3)
    lung = np.zeros(grid.shape, np.float32)
    lobe = np.zeros(grid.shape, np.uint8)
    for side in (-1, 1):
        xc, yc, a, b = anat.lung_ellipse(side, z)
        shape = occupancy(_superellipse_sd(x, y, xc, yc, a, b, 2.2), grid.voxel_cm)
        above_dome = occupancy(anat.dome_z(side, x, y) - z, grid.voxel_cm)
        this = shape * above_dome * (side * x > 0)
        lung += this
        lower = (y - z) > (1.0 * anat.scale + anat.dome_crest(side) + 6.2)  # oblique major fissure
        upper_zone = z > 0.8 * anat.scale  # minor fissure (right) / upper edge of the lingula (left)
        labels = np.where(lower, 3, np.where(upper_zone, 1, 2)) + (3 if side > 0 else 0)
        lobe = np.where(this > 0.02, labels.astype(np.uint8), lobe)
    return np.clip(lung, 0.0, 1.0), lobe


def _mediastinum(anat: Anatomy, grid: VoxelGrid, mu: np.ndarray) -> np.ndarray:
    """Paint heart and great vessels into ``mu``; return the mediastinal occupancy (carves the lungs)."""
    s = anat.scale
    med = np.zeros(grid.shape, np.float32)
    heart = anat.heart_frame()
    rot = rotation_matrix(heart["yaw"], heart["pitch"])
    floor = heart["floor_z"]
    for centre, radii, r in ((heart["centre"], heart["radii"], rot), (heart["ra_centre"], heart["ra_radii"], None),
                             (np.array([2.9 * s, -1.4 * s, 1.6 * s]), np.array([1.9, 1.8, 1.7]) * s, None),
                             (np.array([0.6 * s, 1.4 * s, -0.8 * s]), np.array([3.2, 2.0, 2.2]) * s, None)):
        reach = radii.max() + grid.voxel_cm
        box = box_slices(grid, centre - reach, centre + reach)
        x, y, z = box_coords(grid, box)
        occ = occupancy(ellipsoid_sd(x, y, z, centre, radii, r), grid.voxel_cm)
        occ = occ * occupancy(floor - z, grid.voxel_cm)  # the heart sits on the diaphragm
        med[box] = np.maximum(med[box], occ)
        mu[box] += occ * (MU["blood"] - mu[box])
    aorta, radius = anat.aorta_path()
    vessels = [(aorta, radius),
               (np.array([[-2.4, -1.4, 12.0], [-2.5, -1.1, 6.0], [-2.3, -0.9, 1.5]]) * s, 1.0 * s),  # SVC
               (np.array([[-1.6, 0.6, -4.5], [-1.6, 0.9, -12.0]]) * s, 1.2 * s)]  # IVC
    hs = anat.hila_scale
    for side in (-1, 1):  # pulmonary arteries to the hila, veins to the left atrium
        hilum = anat.hilum(side)
        start = np.array([2.4 * s, -1.4 * s, 2.6 * s]) if side > 0 else np.array([1.6 * s, -1.6 * s, 2.4 * s])
        mid = 0.5 * (start + hilum) + np.array([0.0, 0.6, 0.6]) * s
        vessels.append((np.stack([start, mid, hilum, hilum + np.array([side * 1.2, 0.6, -2.6]) * s]),
                        np.array([1.25, 1.15, 0.95, 0.7]) * s * hs))
        vessels.append((np.stack([np.array([side * 4.6, 1.4, -1.4]) * s, np.array([side * 1.8, 1.4, -1.0]) * s]),
                        0.65 * s))
    for points, rad in vessels:
        tube = np.zeros(grid.shape, np.float32)
        paint_polyline(tube, grid, points, rad, 1.0)
        med = np.maximum(med, tube)
        mu += tube * (MU["blood"] - mu)
    x, y, z = box_coords(grid, (slice(None),) * 3)
    spine_x, spine_y = anat.spine_centre(z)
    columns = [_superellipse_sd(x, y, spine_x, spine_y + 0.6 * s, 2.0 * s, 3.6 * s, 2.0),  # paravertebral
               _superellipse_sd(x, y, 0.0, -6.0 * s, 0.7 * s, 6.0 * s, 2.0),  # anterior junction
               np.maximum(_superellipse_sd(x, y, 0.0, -1.0 * s, 2.6 * s * anat.mediastinum_scale, 5.5 * s, 2.0),
                          3.0 * s - z)]  # upper mediastinum (above the arch)
    for sd in columns:
        med = np.maximum(med, occupancy(sd, grid.voxel_cm))
    return med


def _gas(anat: Anatomy, grid: VoxelGrid, mu: np.ndarray, rng: np.random.Generator) -> None:
    """Stomach bubble with an upright fluid level, colonic flexure and a few bowel gas pockets."""
    s = anat.scale
    crest = anat.dome_crest(1)
    bubble = np.array([5.6 * s, 0.6 * s, crest - 2.6 * s - anat.dome_curvature * 0.4])
    radii = np.array([3.4, 2.8, 2.2]) * s * rng.uniform(0.75, 1.25, 3)
    reach = radii.max() + grid.voxel_cm
    box = box_slices(grid, bubble - reach, bubble + reach)
    x, y, z = box_coords(grid, box)
    occ = occupancy(ellipsoid_sd(x, y, z, bubble, radii), grid.voxel_cm)
    occ = occ * occupancy(bubble[2] - 0.4 * radii[2] - z, grid.voxel_cm)  # gas above the fluid level
    mu[box] -= occ * mu[box]
    for _ in range(int(rng.integers(2, 6))):
        centre = np.array([rng.uniform(-9, 10) * s, rng.uniform(-5, 3) * s, rng.uniform(-24, crest - 8)])
        paint_ellipsoid(mu, grid, centre, rng.uniform(0.8, 2.2, 3) * s, MU["air"])


def _texture(grid: VoxelGrid, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean 3-D correlated noise (power ~ f^-3) at twice the voxel size, upsampled, std ~ 1."""
    coarse = tuple(n // 2 + 1 for n in grid.shape)
    spectrum = np.fft.rfftn(rng.standard_normal(coarse).astype(np.float32))
    freqs = np.meshgrid(*(np.fft.fftfreq(n) for n in coarse[:2]), np.fft.rfftfreq(coarse[2]), indexing="ij")
    radius = np.sqrt(sum(f**2 for f in freqs)) + 0.02
    field = np.fft.irfftn(spectrum * radius**-1.5, s=coarse, axes=(0, 1, 2)).astype(np.float32)
    field = ndimage.zoom(field, [n / c for n, c in zip(grid.shape, coarse)], order=1)
    return (field - field.mean()) / (field.std() + 1e-6)


def build_volume(anat: Anatomy, grid: VoxelGrid | None = None) -> PhantomVolume:
    """Voxelise the large organs of ``anat`` (deterministic in ``anat.seed``)."""
    grid = grid or default_grid()
    rng = np.random.default_rng(np.random.SeedSequence([anat.seed, 0x701]))
    mu = np.zeros(grid.shape, np.float32)
    _body(anat, grid, mu)
    lung, lobe = _lungs(anat, grid, rng)
    med = _mediastinum(anat, grid, mu)
    lung *= 1.0 - med
    _, _, z = box_coords(grid, (slice(None),) * 3)
    density = anat.lung_density * (1.0 + 0.22 * np.clip((2.0 - z) / 16.0, -0.6, 1.0))  # upright gradient
    lung_mu = LUNG_MU_PER_DENSITY * density * (1.0 + 0.07 * _texture(grid, rng))
    mu += lung * (lung_mu - mu)
    _gas(anat, grid, mu, rng)
    lobe[lung < 0.05] = 0
    return PhantomVolume(grid, mu, lung, lobe)
