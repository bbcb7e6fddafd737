"""Projection geometry of the PA and left-lateral views, and a fast divergent-beam voxel projector.

Patient coordinates are DICOM LPS in centimetres: ``+x`` patient left, ``+y`` posterior, ``+z`` head.
The origin is on the midline at mid-chest depth, near T7.

* **PA**: source posterior, detector plane ``y = detector_cm`` in front of the patient, rays run
  towards ``-y``. Image columns run along ``+x`` (patient right on image left), rows along ``-z``.
* **LL**: source on the patient's right, detector plane ``x = detector_cm`` against the left side,
  rays run towards ``+x``. Image columns run along ``+y`` (anterior on image left), rows along ``-z``.

Magnification of a point at distance ``d`` from the detector plane is ``SID / (SID - d)``; the same
``z`` maps to the same image row in both views up to that factor (the 3-D consistency property).
The voxel projector splits the volume into depth slabs, sums each slab (parallel rays inside a slab)
and resamples it onto the detector with the slab's own magnification (Joseph's idea, slab-wise).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

VIEWS = ("PA", "LL")


@dataclass(frozen=True)
class VoxelGrid:
    """A regular grid of voxel centres; arrays on it are indexed ``[iz, iy, ix]``."""

    origin_cm: tuple[float, float, float]  # (x0, y0, z0): centre of voxel [0, 0, 0]
    shape: tuple[int, int, int]  # (nz, ny, nx)
    voxel_cm: float

    def axis(self, name: str) -> np.ndarray:
        """Voxel-centre coordinates along ``x``, ``y`` or ``z``."""
        index = {"x": 0, "y": 1, "z": 2}[name]
        count = self.shape[2 - index]
        return (self.origin_cm[index] + self.voxel_cm * np.arange(count)).astype(np.float32)

    def index_range(self, name: str, lo: float, hi: float) -> tuple[int, int]:
        """Half-open index range of the voxels whose centres lie in ``[lo, hi]`` (clipped)."""
        index = {"x": 0, "y": 1, "z": 2}[name]
        count = self.shape[2 - index]
        first = int(np.ceil((lo - self.origin_cm[index]) / self.voxel_cm))
        last = int(np.floor((hi - self.origin_cm[index]) / self.voxel_cm)) + 1
        return max(first, 0), min(max(last, 0), count)


@dataclass(frozen=True)
class ViewGeometry:
    """One projection view.

    Attributes:
        name: ``PA`` or ``LL``.
        detector_cm: position of the detector plane (``y`` for PA, ``x`` for LL).
        size: detector pixels per side (square field).
        field_cm: detector side length.
        sid_cm: source-to-image distance.
        centre_u_cm: lateral position of the central ray (``x`` for PA, ``y`` for LL).
        centre_z_cm: height of the central ray.
        rotation_deg: patient rotation about the vertical axis for this exposure.
        rotation_axis_cm: ``(x, y)`` of that vertical axis.
    """

    name: str
    detector_cm: float
    size: int = 256
    field_cm: float = 43.0
    sid_cm: float = 180.0
    centre_u_cm: float = 0.0
    centre_z_cm: float = -3.0
    rotation_deg: float = 0.0
    rotation_axis_cm: tuple[float, float] = (0.0, 3.0)

    def __post_init__(self) -> None:
        if self.name not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {self.name!r}")

    @property
    def depth_axis(self) -> int:
        """Index (0=x, 1=y) of the coordinate along the beam."""
        return 1 if self.name == "PA" else 0

    @property
    def lateral_axis(self) -> int:
        """Index (0=x, 1=y) of the coordinate along image columns."""
        return 0 if self.name == "PA" else 1

    @property
    def depth_sign(self) -> float:
        """``d = depth_sign * (coordinate - detector_cm)`` is the distance from the detector."""
        return 1.0 if self.name == "PA" else -1.0

    @property
    def pixel_cm(self) -> float:
        """Detector pixel pitch."""
        return self.field_cm / self.size

    def magnification(self, distance_cm: np.ndarray | float) -> np.ndarray | float:
        """``SID / (SID - d)`` for distances ``d`` from the detector plane."""
        return self.sid_cm / (self.sid_cm - distance_cm)

    def rotate(self, points: np.ndarray) -> np.ndarray:
        """Apply this exposure's patient rotation (about a vertical axis) to ``[..., 3]`` points."""
        if self.rotation_deg == 0.0:
            return points
        angle = np.deg2rad(self.rotation_deg)
        cos, sin = np.cos(angle), np.sin(angle)
        ax, ay = self.rotation_axis_cm
        out = np.array(points, dtype=np.float64, copy=True)
        dx, dy = points[..., 0] - ax, points[..., 1] - ay
        out[..., 0] = ax + cos * dx - sin * dy
        out[..., 1] = ay + sin * dx + cos * dy
        return out

    @cached_property
    def source(self) -> np.ndarray:
        """Focal spot position ``[3]``."""
        point = np.zeros(3)
        point[self.depth_axis] = self.detector_cm + self.depth_sign * self.sid_cm
        point[self.lateral_axis] = self.centre_u_cm
        point[2] = self.centre_z_cm
        return point

    @cached_property
    def pixel_u(self) -> np.ndarray:
        """Lateral detector coordinate of each column centre ``[size]``."""
        return self.centre_u_cm - self.field_cm / 2 + (np.arange(self.size) + 0.5) * self.pixel_cm

    @cached_property
    def pixel_v(self) -> np.ndarray:
        """Vertical detector coordinate (``z`` on the detector) of each row centre ``[size]``."""
        return self.centre_z_cm + self.field_cm / 2 - (np.arange(self.size) + 0.5) * self.pixel_cm

    def distance(self, points: np.ndarray) -> np.ndarray:
        """Distance of ``[..., 3]`` points from the detector plane."""
        return self.depth_sign * (points[..., self.depth_axis] - self.detector_cm)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Project ``[..., 3]`` patient points (already rotated) to fractional pixel coordinates.

        Returns:
            ``(row, col, magnification)``, each shaped like ``points[..., 0]``.
        """
        mag = self.magnification(self.distance(points))
        u = self.centre_u_cm + (points[..., self.lateral_axis] - self.centre_u_cm) * mag
        v = self.centre_z_cm + (points[..., 2] - self.centre_z_cm) * mag
        col = (u - (self.centre_u_cm - self.field_cm / 2)) / self.pixel_cm - 0.5
        row = ((self.centre_z_cm + self.field_cm / 2) - v) / self.pixel_cm - 0.5
        return row, col, mag

    def detector_points(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """3-D positions of pixel centres given integer ``rows`` and ``cols`` (broadcast) -> ``[..., 3]``."""
        rows, cols = np.broadcast_arrays(rows, cols)
        points = np.empty(rows.shape + (3,))
        points[..., self.depth_axis] = self.detector_cm
        points[..., self.lateral_axis] = self.centre_u_cm - self.field_cm / 2 + (cols + 0.5) * self.pixel_cm
        points[..., 2] = self.centre_z_cm + self.field_cm / 2 - (rows + 0.5) * self.pixel_cm
        return points


def _interp_matrix(targets: np.ndarray, first: float, step: float, count: int) -> np.ndarray:
    """Linear-interpolation weights ``[len(targets), count]`` from samples at ``first + step*i``."""
    position = (targets - first) / step
    lower = np.floor(position).astype(int)
    frac = position - lower
    matrix = np.zeros((len(targets), count), dtype=np.float32)
    rows = np.arange(len(targets))
    for offset, weight in ((0, 1.0 - frac), (1, frac)):
        index = lower + offset
        valid = (index >= 0) & (index < count)
        matrix[rows[valid], index[valid]] = weight[valid]
    return matrix


class SlabProjector:
    """Divergent-beam line integrals of voxel volumes for one view (slab-wise magnification).

    Args:
        grid: the voxel grid of the volumes to project.
        view: the view geometry.
        slab_cm: thickness of a depth slab (each slab is projected with its centre's magnification).
    """

    def __init__(self, grid: VoxelGrid, view: ViewGeometry, slab_cm: float = 2.4) -> None:
        self.grid, self.view = grid, view
        depth_name = "xy"[view.depth_axis]
        lateral_name = "xy"[view.lateral_axis]
        depth = grid.axis(depth_name)
        per_slab = max(1, int(round(slab_cm / grid.voxel_cm)))
        self.bounds = [(i, min(i + per_slab, len(depth))) for i in range(0, len(depth), per_slab)]
        rot = np.deg2rad(view.rotation_deg)
        axis_x, axis_y = view.rotation_axis_cm
        lateral = grid.axis(lateral_name)
        z_axis = grid.axis("z")
        self.row_mats, self.col_mats = [], []
        for lo, hi in self.bounds:
            centre = float(depth[lo:hi].mean())
            mag = view.magnification(view.depth_sign * (centre - view.detector_cm))
            z_targets = view.centre_z_cm + (view.pixel_v - view.centre_z_cm) / mag
            u_targets = view.centre_u_cm + (view.pixel_u - view.centre_u_cm) / mag
            # small rotation about a vertical axis = a depth-dependent lateral shear of the slab
            if view.name == "PA":
                u_targets = u_targets + (centre - axis_y) * np.sin(rot)
            else:
                u_targets = u_targets - (centre - axis_x) * np.sin(rot)
            self.row_mats.append(_interp_matrix(z_targets, float(z_axis[0]), grid.voxel_cm, len(z_axis)))
            self.col_mats.append(_interp_matrix(u_targets, float(lateral[0]), grid.voxel_cm, len(lateral)))
        self.col_mats_t = [np.ascontiguousarray(m.T) for m in self.col_mats]  # [n_lateral, size] each

    def project(self, volume: np.ndarray, offset: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
        """Line integrals ``[size, size]`` of ``volume`` (per-cm values) placed at index ``offset``.

        Args:
            volume: ``[nz, ny, nx]`` values (e.g. attenuation in 1/cm), possibly a sub-block.
            offset: ``(iz, iy, ix)`` of ``volume[0, 0, 0]`` inside the full grid.
        """
        iz, iy, ix = offset
        nz, ny, nx = volume.shape
        depth_axis = 1 if self.view.name == "PA" else 2  # array axis of the beam
        d0 = iy if depth_axis == 1 else ix
        dn = ny if depth_axis == 1 else nx
        l0, ln = (ix, nx) if depth_axis == 1 else (iy, ny)
        image = np.zeros((self.view.size, self.view.size), dtype=np.float32)
        pieces = [(k, max(lo, d0), min(hi, d0 + dn)) for k, (lo, hi) in enumerate(self.bounds)]
        pieces = [(k, a, b) for k, a, b in pieces if a < b]
        if not pieces:
            return image
        starts = [a - d0 for _, a, _ in pieces]
        ends = pieces[-1][2] - d0
        block = volume[:, :, :ends] if depth_axis == 2 else volume[:, :ends, :]
        sums = np.add.reduceat(block, starts, axis=depth_axis, dtype=np.float32)  # one plane per slab
        for j, (k, _, _) in enumerate(pieces):
            slab = np.ascontiguousarray(sums[:, j, :] if depth_axis == 1 else sums[:, :, j]) * self.grid.voxel_cm  # [nz, n_lat]
            image += self.row_mats[k][:, iz:iz + nz] @ slab @ self.col_mats_t[k][l0:l0 + ln]  # [size, size]
        return image
