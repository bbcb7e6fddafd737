"""Geometric primitives: anti-aliased voxel occupancies and closed-form line integrals on divergent rays.

Two families:

* **Voxel occupancies** (large organs) are evaluated only inside a bounding box and written with
  partial-volume anti-aliasing, ``occ = clip(0.5 - sd / voxel, 0, 1)`` from an approximate signed
  distance ``sd``.
* **Analytic items** (ribs, vessels, airways, wires, nodules) are evaluated per detector pixel on the
  exact ray from the focal spot to that pixel, inside each item's projected bounding window. Items are
  batched by window size so thousands of segments cost a few vectorised NumPy passes:

  - elliptic-cylinder segments (``Tubes``): chord = intersection of the infinite-cylinder interval
    ``t_mid +- sqrt(|f|^2 - (q0 x f)^2) / |f|^2`` with the end-plane slab;
  - ellipsoids: ``L = 2 sqrt(beta^2 - alpha gamma) / alpha`` (``alpha = e'Qe``, ``beta = e'Qp``,
    ``gamma = p'Qp - 1``);
  - Gaussian blobs: ``A sqrt(2 pi / alpha) exp(-(gamma + 1 - beta^2 / alpha) / 2)`` with ``Q`` the
    precision matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from mvcm_core.data.phantom.geometry import ViewGeometry, VoxelGrid


# ----------------------------------------------------------------------------------------- voxels
def box_slices(grid: VoxelGrid, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Index slices ``(z, y, x)`` of the voxels inside the box ``lo..hi`` (``[3]`` x, y, z), or None."""
    (x0, x1), (y0, y1), (z0, z1) = (grid.index_range(n, lo[i], hi[i]) for i, n in enumerate("xyz"))
    if x0 >= x1 or y0 >= y1 or z0 >= z1:
        return None
    return slice(z0, z1), slice(y0, y1), slice(x0, x1)


def box_coords(grid: VoxelGrid, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, ...]:
    """Broadcastable voxel-centre coordinates ``X [1,1,nx]``, ``Y [1,ny,1]``, ``Z [nz,1,1]`` of a box."""
    zs, ys, xs = box
    x = grid.axis("x")[xs][None, None, :]
    y = grid.axis("y")[ys][None, :, None]
    z = grid.axis("z")[zs][:, None, None]
    return x, y, z


def occupancy(signed_distance: np.ndarray, voxel_cm: float) -> np.ndarray:
    """Anti-aliased fraction of a voxel inside a surface (``sd < 0`` inside)."""
    return np.clip(0.5 - signed_distance / voxel_cm, 0.0, 1.0).astype(np.float32)


def rotation_matrix(yaw_deg: float = 0.0, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """Rotation about z (yaw), then y (pitch), then x (roll); columns are the rotated frame's axes."""
    a, b, c = np.deg2rad([yaw_deg, pitch_deg, roll_deg])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[1, 0, 0], [0, np.cos(c), -np.sin(c)], [0, np.sin(c), np.cos(c)]])
    return rz @ ry @ rx


def ellipsoid_sd(x: np.ndarray, y: np.ndarray, z: np.ndarray, centre: np.ndarray, radii: np.ndarray,
                 rotation: np.ndarray | None = None) -> np.ndarray:
    """Approximate signed distance to an ellipsoid (exact along the radial direction)."""
    dx, dy, dz = x - centre[0], y - centre[1], z - centre[2]
    if rotation is not None:  # coordinates in the ellipsoid frame: R^T (p - c)
        dx, dy, dz = (rotation[0, i] * dx + rotation[1, i] * dy + rotation[2, i] * dz for i in range(3))
    q = np.sqrt((dx / radii[0]) ** 2 + (dy / radii[1]) ** 2 + (dz / radii[2]) ** 2)
    dist = np.sqrt(dx**2 + dy**2 + dz**2)
    return dist * (1.0 - 1.0 / np.maximum(q, 1e-6))


def paint_ellipsoid(volume: np.ndarray, grid: VoxelGrid, centre, radii, value: float,
                    rotation: np.ndarray | None = None, weight: np.ndarray | None = None) -> None:
    """Blend ``value`` into ``volume`` where the ellipsoid is: ``v += occ * (value - v)`` (in place).

    Args:
        weight: optional full-grid multiplier of the occupancy (e.g. a lung fraction).
    """
    centre, radii = np.asarray(centre, float), np.asarray(radii, float)
    reach = radii.max() + grid.voxel_cm
    box = box_slices(grid, centre - reach, centre + reach)
    if box is None:
        return
    x, y, z = box_coords(grid, box)
    occ = occupancy(ellipsoid_sd(x, y, z, centre, radii, rotation), grid.voxel_cm)
    if weight is not None:
        occ = occ * weight[box]
    volume[box] += occ * (value - volume[box])


def capsule_sd(x, y, z, start: np.ndarray, end: np.ndarray, radius: float) -> np.ndarray:
    """Signed distance to a capsule (segment ``start``-``end`` swept by a sphere)."""
    axis = end - start
    length2 = max(float(axis @ axis), 1e-9)
    t = ((x - start[0]) * axis[0] + (y - start[1]) * axis[1] + (z - start[2]) * axis[2]) / length2
    t = np.clip(t, 0.0, 1.0)
    return np.sqrt((x - start[0] - t * axis[0]) ** 2 + (y - start[1] - t * axis[1]) ** 2
                   + (z - start[2] - t * axis[2]) ** 2) - radius


def paint_polyline(volume: np.ndarray, grid: VoxelGrid, points: np.ndarray, radius: np.ndarray | float,
                   value: float) -> None:
    """Blend ``value`` along a tube through ``points [K, 3]`` (capsules between neighbours)."""
    radii = np.broadcast_to(np.asarray(radius, float), (len(points),))
    for start, end, r0, r1 in zip(points[:-1], points[1:], radii[:-1], radii[1:]):
        radius_seg = 0.5 * (r0 + r1)
        reach = radius_seg + grid.voxel_cm
        box = box_slices(grid, np.minimum(start, end) - reach, np.maximum(start, end) + reach)
        if box is None:
            continue
        x, y, z = box_coords(grid, box)
        occ = occupancy(capsule_sd(x, y, z, start, end, radius_seg), grid.voxel_cm)
        volume[box] += occ * (value - volume[box])


# ------------------------------------------------------------------------------ analytic items
@dataclass
class Tubes:
    """A batch of elliptic-cylinder segments (arrays of length S).

    ``start [S,3]`` and ``axis [S,3]`` (unit) with ``length [S]`` span the segment; the cross-section
    has half-axes ``half_h`` along ``normal [S,3]`` (unit, perpendicular to the axis) and ``half_w``
    along ``axis x normal``; ``mu [S]`` is the attenuation added inside (1/cm, may be negative).
    """

    start: np.ndarray
    axis: np.ndarray
    length: np.ndarray
    normal: np.ndarray
    half_h: np.ndarray
    half_w: np.ndarray
    mu: np.ndarray

    def __len__(self) -> int:
        return len(self.length)

    @staticmethod
    def concat(parts: list[Tubes]) -> Tubes:
        """One batch from several (empty batches allowed)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return empty_tubes()
        return Tubes(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                       ("start", "axis", "length", "normal", "half_h", "half_w", "mu")))

    def scaled(self, factor: float, shell: float = 0.0) -> Tubes:
        """Copy with ``mu * factor`` and the cross-section shrunk by ``shell`` cm (for hollow tubes)."""
        return Tubes(self.start, self.axis, self.length, self.normal, np.maximum(self.half_h - shell, 1e-3),
                     np.maximum(self.half_w - shell, 1e-3), self.mu * factor)


def empty_tubes() -> Tubes:
    """A batch with no segment."""
    z3, z1 = np.zeros((0, 3)), np.zeros(0)
    return Tubes(z3, z3, z1, z3, z1, z1, z1)


def polyline_tubes(points: np.ndarray, half_h, half_w, mu: float, up=(0.0, 0.0, 1.0),
                   cortex_cm: float = 0.0, core_mu: float | None = None) -> Tubes:
    """Segments along ``points [K,3]``; optional hollow cortex (``mu`` shell around a ``core_mu`` core).

    Args:
        half_h, half_w: cross-section half-axes (scalars or ``[K]`` per point); ``half_h`` lies along
            the component of ``up`` perpendicular to the segment.
        cortex_cm: shell thickness; when > 0 the core (shrunk by it) gets ``core_mu`` instead of ``mu``.
    """
    points = np.asarray(points, float)
    if len(points) < 2:
        return empty_tubes()
    count = len(points)
    hh = np.broadcast_to(np.asarray(half_h, float), (count,))
    hw = np.broadcast_to(np.asarray(half_w, float), (count,))
    vec = points[1:] - points[:-1]  # [K-1, 3]
    length = np.linalg.norm(vec, axis=1)
    keep = length > 1e-6
    axis = vec[keep] / length[keep, None]
    up_vec = np.broadcast_to(np.asarray(up, float), axis.shape)
    normal = up_vec - (up_vec * axis).sum(1, keepdims=True) * axis
    bad = np.linalg.norm(normal, axis=1) < 1e-6
    if bad.any():  # up parallel to the segment: any perpendicular will do
        alt = np.cross(axis[bad], np.array([1.0, 0.0, 0.0]))
        alt[np.linalg.norm(alt, axis=1) < 1e-6] = [0.0, 1.0, 0.0]
        normal[bad] = alt
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    seg_h = (0.5 * (hh[1:] + hh[:-1]))[keep]
    seg_w = (0.5 * (hw[1:] + hw[:-1]))[keep]
    tubes = Tubes(points[:-1][keep], axis, length[keep], normal, seg_h, seg_w, np.full(keep.sum(), mu))
    if cortex_cm <= 0:
        return tubes
    core = tubes.scaled(1.0, shell=cortex_cm)
    core.mu = np.full(len(core), (core_mu if core_mu is not None else 0.0) - mu)
    return Tubes.concat([tubes, core])


def _rotate_frame(view: ViewGeometry, points: np.ndarray, vectors: list[np.ndarray]):
    """Rotate points and direction vectors by the view's patient rotation."""
    if view.rotation_deg == 0.0:
        return points, vectors
    origin = view.rotate(np.zeros(3))
    return view.rotate(points), [view.rotate(v) - origin for v in vectors]


def _windows(view: ViewGeometry, rows: np.ndarray, cols: np.ndarray, reach: np.ndarray
             ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Group items by window size; yields ``(items [S], rows [S,H,1], cols [S,1,W], valid [S,H,W])``.

    Args:
        rows, cols: ``[S, P]`` fractional pixel positions of each item's key points.
        reach: ``[S]`` extra margin in pixels around them.
    """
    n = view.size
    r0 = np.floor(rows.min(1) - reach).astype(int)
    r1 = np.ceil(rows.max(1) + reach).astype(int) + 1
    c0 = np.floor(cols.min(1) - reach).astype(int)
    c1 = np.ceil(cols.max(1) + reach).astype(int) + 1
    r0, c0 = np.maximum(r0, 0), np.maximum(c0, 0)
    r1, c1 = np.minimum(r1, n), np.minimum(c1, n)
    alive = (r1 > r0) & (c1 > c0)
    heights = 2 ** np.ceil(np.log2(np.maximum(r1 - r0, 1))).astype(int)
    widths = 2 ** np.ceil(np.log2(np.maximum(c1 - c0, 1))).astype(int)
    keys = heights * 4096 + widths
    for key in np.unique(keys[alive]):
        items = np.flatnonzero(alive & (keys == key))
        h, w = int(key // 4096), int(key % 4096)
        rr = r0[items, None, None] + np.arange(h)[None, :, None]  # [S, H, 1]
        cc = c0[items, None, None] + np.arange(w)[None, None, :]  # [S, 1, W]
        valid = (rr < r1[items, None, None]) & (cc < c1[items, None, None])  # [S, H, W]
        yield items, rr, cc, valid


def _accumulate(view: ViewGeometry, image: np.ndarray, rr, cc, valid, values) -> None:
    """Add ``values [S,H,W]`` at pixels ``(rr, cc)`` where ``valid`` (in place)."""
    n = view.size
    flat = np.broadcast_to(rr * n + cc, valid.shape)[valid]
    image += np.bincount(flat, weights=values[valid], minlength=n * n).reshape(n, n).astype(np.float32)


class _RayTerms:
    """Per-pixel ray quantities of a window batch, kept affine in the detector coordinates.

    The ray from the source ``s`` to pixel ``D`` has ``diff = D - s`` whose components are
    ``(c0, du, dv)`` along (depth, lateral, z); any dot product ``diff . w`` is therefore
    ``c0 w_depth + du w_lateral + dv w_z`` and never needs ``[S, H, W, 3]`` arrays.
    """

    def __init__(self, view: ViewGeometry, rr: np.ndarray, cc: np.ndarray, anchor: np.ndarray) -> None:
        src = view.source
        self.k, self.lat = view.depth_axis, view.lateral_axis
        self.c0 = view.detector_cm - src[self.k]
        self.du = view.centre_u_cm - view.field_cm / 2 + (cc + 0.5) * view.pixel_cm - src[self.lat]  # [S, 1, W]
        self.dv = view.centre_z_cm + view.field_cm / 2 - (rr + 0.5) * view.pixel_cm - src[2]  # [S, H, 1]
        self.norm = np.sqrt(self.c0**2 + self.du**2 + self.dv**2)  # [S, H, W]
        self.lam = ((anchor[:, self.k] - src[self.k]) / self.c0)[:, None, None]  # [S, 1, 1]
        self.src = src

    def dot(self, vec: np.ndarray) -> np.ndarray:
        """``diff . vec`` for per-item vectors ``vec [S, 3]`` -> ``[S, H, W]``."""
        return (self.c0 * vec[:, self.k, None, None] + self.du * vec[:, self.lat, None, None]
                + self.dv * vec[:, 2, None, None])


def _render_batched(view: ViewGeometry, rows, cols, reach, chord_fn: Callable) -> np.ndarray:
    image = np.zeros((view.size, view.size), dtype=np.float32)
    for items, rr, cc, valid in _windows(view, rows, cols, reach):
        values = chord_fn(items, rr, cc)
        _accumulate(view, image, rr, cc, valid, values)
    return image


def render_tubes(tubes: Tubes, view: ViewGeometry) -> np.ndarray:
    """Line integrals ``[size, size]`` of a batch of elliptic-cylinder segments on divergent rays."""
    if not len(tubes):
        return np.zeros((view.size, view.size), dtype=np.float32)
    start, (axis, normal) = _rotate_frame(view, tubes.start, [tubes.axis, tubes.normal])
    end = start + axis * tubes.length[:, None]
    binormal = np.cross(axis, normal)
    r_a, c_a, m_a = view.project(start)
    r_b, c_b, m_b = view.project(end)
    reach = np.maximum(tubes.half_h, tubes.half_w) * np.maximum(m_a, m_b) / view.pixel_cm + 1.0
    centre = 0.5 * (start + end)

    def chord(items, rr, cc):
        ray = _RayTerms(view, rr, cc, centre[items])
        offset = ray.src - start[items]  # [S, 3]: source relative to the segment start
        hh = tubes.half_h[items, None, None]
        hw = tubes.half_w[items, None, None]
        terms = []
        for vec in (normal[items], binormal[items], axis[items]):
            along = ray.dot(vec)  # diff . vec
            base = (offset * vec).sum(1)[:, None, None]
            terms.append((base + ray.lam * along, along / ray.norm))  # (r . vec, e . vec)
        (q1, f1), (q2, f2), (ra, ea) = terms
        q1, f1, q2, f2 = q1 / hh, f1 / hh, q2 / hw, f2 / hw
        ff = np.maximum(f1 * f1 + f2 * f2, 1e-12)
        cross = q1 * f2 - q2 * f1
        half = np.sqrt(np.maximum(ff - cross * cross, 0.0)) / ff
        mid = -(q1 * f1 + q2 * f2) / ff
        safe = np.where(np.abs(ea) < 1e-9, 1e-9, ea)
        ta, tb = -ra / safe, (tubes.length[items, None, None] - ra) / safe
        lo, hi = np.minimum(ta, tb), np.maximum(ta, tb)
        length = np.clip(np.minimum(mid + half, hi) - np.maximum(mid - half, lo), 0.0, None)
        return length * tubes.mu[items, None, None]

    rows = np.stack([r_a, r_b], 1)  # [S, 2]
    cols = np.stack([c_a, c_b], 1)  # [S, 2]
    return _render_batched(view, rows, cols, reach, chord)


def _quadric_setup(view, centres, radii, rotations):
    centres = np.asarray(centres, float).reshape(-1, 3)
    radii = np.asarray(radii, float).reshape(-1, 3)
    if rotations is None:
        rotations = np.broadcast_to(np.eye(3), (len(centres), 3, 3))
    centres, _ = _rotate_frame(view, centres, [])
    if view.rotation_deg:
        rotations = np.einsum("ij,sjk->sik", rotation_matrix(view.rotation_deg), rotations)
    inv = rotations / radii[:, None, :] ** 2  # R diag(1/r^2)
    quad = np.einsum("sij,skj->sik", inv, rotations)  # Q = R diag(1/r^2) R^T, [S, 3, 3]
    return centres, radii, quad


def _quadric_terms(view, rr, cc, centres, quad):
    """``alpha = e'Qe``, ``beta = e'Qd``, ``gamma = d'Qd`` (``d`` = ray point - centre) -> ``[S, H, W]`` each."""
    ray = _RayTerms(view, rr, cc, centres)
    k, lat = ray.k, ray.lat
    qe = [ray.dot(quad[:, :, j]) for j in range(3)]  # (Q diff)_j, Q symmetric
    dqd = ray.c0 * qe[k] + ray.du * qe[lat] + ray.dv * qe[2]  # diff' Q diff
    offset = ray.src - centres  # [S, 3]
    qo = np.einsum("sij,sj->si", quad, offset)  # Q (s - c)
    dqo = ray.dot(qo)  # diff' Q (s - c)
    oqo = (offset * qo).sum(1)[:, None, None]
    lam = ray.lam
    alpha = dqd / ray.norm**2
    beta = (dqo + lam * dqd) / ray.norm
    gamma = oqo + 2 * lam * dqo + lam**2 * dqd
    return alpha, beta, gamma


def render_ellipsoids(view: ViewGeometry, centres, radii, mu, rotations=None) -> np.ndarray:
    """Line integrals of uniform ellipsoids (``centres [S,3]``, ``radii [S,3]``, ``mu [S]``)."""
    if len(np.atleast_1d(mu)) == 0:
        return np.zeros((view.size, view.size), dtype=np.float32)
    centres, radii, quad = _quadric_setup(view, centres, radii, rotations)
    mu = np.broadcast_to(np.asarray(mu, float), (len(centres),))
    rows, cols, mag = view.project(centres)
    reach = radii.max(1) * mag / view.pixel_cm + 1.5

    def chord(items, rr, cc):
        alpha, beta, gamma = _quadric_terms(view, rr, cc, centres[items], quad[items])
        disc = np.maximum(beta * beta - alpha * (gamma - 1.0), 0.0)
        return 2.0 * np.sqrt(disc) / alpha * mu[items, None, None]

    return _render_batched(view, rows[:, None], cols[:, None], reach, chord)


def render_blobs(view: ViewGeometry, centres, sigmas, peak_mu, rotations=None) -> np.ndarray:
    """Line integrals of Gaussian blobs ``peak_mu * exp(-|R^T(x-c)/sigma|^2 / 2)``."""
    if len(np.atleast_1d(peak_mu)) == 0:
        return np.zeros((view.size, view.size), dtype=np.float32)
    centres, sigmas, prec = _quadric_setup(view, centres, sigmas, rotations)
    peak = np.broadcast_to(np.asarray(peak_mu, float), (len(centres),))
    rows, cols, mag = view.project(centres)
    reach = 3.2 * sigmas.max(1) * mag / view.pixel_cm + 1.0

    def integral(items, rr, cc):
        alpha, beta, gamma = _quadric_terms(view, rr, cc, centres[items], prec[items])
        return peak[items, None, None] * np.sqrt(2 * np.pi / alpha) * np.exp(-0.5 * (gamma - beta**2 / alpha))

    return _render_batched(view, rows[:, None], cols[:, None], reach, integral)
