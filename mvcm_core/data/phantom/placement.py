"""Shared pieces of finding placement: the plan a study's findings build, and edit helpers."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mvcm_core.data.findings import Finding
from mvcm_core.data.phantom.anatomy import Anatomy
from mvcm_core.data.phantom.primitives import Tubes, box_slices, empty_tubes
from mvcm_core.data.phantom.volume import PhantomVolume

SEVERITY_LEVEL = {"minimal": 0, "small": 0, "mild": 1, None: 1, "moderate": 1, "large": 2, "severe": 2}
LOBE_LABEL = {(-1, "upper"): 1, (-1, "middle"): 2, (-1, "lower"): 3, (1, "upper"): 4, (1, "lingula"): 5,
               (1, "middle"): 5, (1, "lower"): 6}


@dataclass
class FindingPlan:
    """Everything the findings of one study add to the base anatomy.

    Attributes:
        mu_edits: ``(offset (iz, iy, ix), delta_mu [nz, ny, nx])`` blocks of the voxel grid.
        lung_removed: blocks of lung fraction lost (air or fluid replaced it): vessels vanish there.
        tubes, ellipsoids, blobs: analytic items (attenuation relative to their surroundings).
        vessel_gain: relative calibre change of upper- and lower-zone vessels.
        vessel_scale, bone_scale: global gains of the vessel and bone channels.
        records: per-finding ground truth (term, side, 3-D centre, size, what was rendered).
    """

    mu_edits: list = field(default_factory=list)
    lung_removed: list = field(default_factory=list)
    tubes: Tubes = field(default_factory=empty_tubes)
    ellipsoids: list = field(default_factory=list)
    blobs: list = field(default_factory=list)
    vessel_gain: tuple[float, float] = (0.0, 0.0)
    vessel_scale: float = 1.0
    bone_scale: float = 1.0
    records: list = field(default_factory=list)

    def add_tubes(self, tubes: Tubes) -> None:
        """Append analytic segments."""
        self.tubes = Tubes.concat([self.tubes, tubes])


def sides_of(finding: Finding, rng: np.random.Generator) -> list[int]:
    """``[-1]`` right, ``[1]`` left, ``[-1, 1]`` bilateral; unspecified sides are drawn at random."""
    if finding.side == "bilateral":
        return [-1, 1]
    if finding.side in ("left", "right"):
        return [1 if finding.side == "left" else -1]
    return [int(rng.choice([-1, 1]))]


def roi(volume: PhantomVolume, lo, hi):
    box = box_slices(volume.grid, np.asarray(lo, float), np.asarray(hi, float))
    if box is None:
        return None, None
    return box, tuple(s.start for s in box)


def side_box(anat: Anatomy, side: int, z_lo: float, z_hi: float):
    width, depth = anat.body_axes(np.array(0.0))
    lo = [0.0 if side > 0 else -float(width), -float(depth), z_lo]
    hi = [float(width) if side > 0 else 0.0, float(depth), z_hi]
    return lo, hi


def lung_radius(anat: Anatomy, side: int, x, y, z) -> np.ndarray:
    """Normalised radius of each point inside a lung's elliptic cross-section (1 at the pleura)."""
    xc, yc, a, b = anat.lung_ellipse(side, z)
    return np.sqrt(((x - xc) / np.maximum(a, 0.5)) ** 2 + ((y - yc) / np.maximum(b, 0.5)) ** 2)


def replace_lung(plan: FindingPlan, volume: PhantomVolume, box, offset, weight: np.ndarray, target_mu: float,
             removes_lung: bool = True) -> float:
    """Replace the lung fraction ``weight`` of a box by ``target_mu``; returns the volume in mL."""
    lung = volume.lung[box]
    frac = lung * weight
    plan.mu_edits.append((offset, (frac * (target_mu - volume.mu[box])).astype(np.float32)))
    if removes_lung:
        plan.lung_removed.append((offset, frac.astype(np.float32)))
    return float(frac.sum() * volume.grid.voxel_cm**3)


def lobe_point(volume: PhantomVolume, labels: list[int], rng: np.random.Generator) -> np.ndarray:
    """A random point well inside the lung voxels with one of ``labels`` (rejection sampling)."""
    g = volume.grid
    for _ in range(20):
        flat = rng.integers(0, volume.lobe.size, 40_000)
        hit = flat[np.isin(volume.lobe.ravel()[flat], labels) & (volume.lung.ravel()[flat] > 0.95)]
        if len(hit):
            break
    else:  # no voxel of that lobe (e.g. an extreme variant): any lung voxel
        hit = np.flatnonzero(volume.lung.ravel() > 0.95)
    zi, yi, xi = np.unravel_index(int(hit[0]), volume.lobe.shape)
    return np.array([g.origin_cm[0] + xi * g.voxel_cm, g.origin_cm[1] + yi * g.voxel_cm,
                     g.origin_cm[2] + zi * g.voxel_cm])


def lobe_labels(finding: Finding, side: int) -> list[int]:
    """Lobe labels a finding may sit in (by lobe, then by zone; all lobes of the side if neither)."""
    lobe = finding.lobe
    zone = finding.zone or ""
    if lobe is None:
        if zone in ("upper", "apex", "apical"):
            lobe = "upper"
        elif zone in ("lower", "base", "basilar", "retrocardiac", "posterior"):
            lobe = "lower"
        elif zone in ("middle", "lingula", "hilar"):
            lobe = "middle"
    if lobe is None:
        return [1, 2, 3] if side < 0 else [4, 5, 6]
    return [LOBE_LABEL.get((side, lobe), 3 if side < 0 else 6)]




def grow_region(plan: FindingPlan, volume: PhantomVolume, box, offset, grown: np.ndarray, base: np.ndarray,
                target_mu: float) -> float:
    """Edit where an occupancy grows from ``base`` to ``grown`` (an organ enlarging into the lung)."""
    gain = np.clip(grown - base, 0.0, 1.0)
    plan.mu_edits.append((offset, (gain * (target_mu - volume.mu[box])).astype(np.float32)))
    plan.lung_removed.append((offset, (gain * volume.lung[box]).astype(np.float32)))
    return float(gain.sum() * volume.grid.voxel_cm**3)
