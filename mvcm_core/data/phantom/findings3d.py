"""Place structured findings in the 3-D phantom (reference §3).

Each canonical term maps to one of three mechanisms:

* **anatomy variants** (:func:`anatomy_changes`): cardiomegaly, emphysema, low volumes, elevated
  hemidiaphragm, scoliosis, aortic tortuosity, mediastinal widening, hilar enlargement, increased
  markings; the base anatomy is rebuilt (and cached) with the changed parameters;
* **voxel edits** in a bounding box of the cached volume (projected alone and added in the log
  domain): effusion (dependent fluid with a meniscus, filling the posterior recess first),
  pneumothorax (apical / lateral air rim, no markings beyond it), lobar opacity, perihilar edema,
  hiatal hernia, pleural thickening;
* **analytic items**: pleural line, plate atelectasis, Kerley B lines, nodules, masses, granulomas,
  scars, and (in :mod:`~mvcm_core.data.phantom.hardware`) devices, fractures and osteophytes.

Unknown or unsupported terms render nothing and are recorded with ``rendered: False``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mvcm_core.data.findings import Finding
from mvcm_core.data.phantom import hardware, variants
from mvcm_core.data.phantom.anatomy import MU, Anatomy
from mvcm_core.data.phantom.placement import (
    SEVERITY_LEVEL,
    FindingPlan,
    lobe_labels,
    lobe_point,
    lung_radius,
    replace_lung,
    roi,
    side_box,
    sides_of,
)
from mvcm_core.data.phantom.primitives import box_coords, occupancy, polyline_tubes
from mvcm_core.data.phantom.volume import PhantomVolume

__all__ = ["FindingPlan", "HANDLERS", "anatomy_changes", "plan_findings"]


def anatomy_changes(findings: list[Finding], anat: Anatomy) -> dict[str, Any]:
    """Anatomy parameters of findings that reshape the lungs (these need a new base anatomy).

    Findings with local effects (cardiomegaly, aortic tortuosity, mediastinal widening, hilar
    enlargement, scoliosis, increased markings) are edits of the cached base instead, so a dataset
    does not rebuild its anatomy for them.
    """
    changes: dict[str, Any] = {}
    for f in findings:
        if f.term == "emphysema":
            changes.update(dome_curvature=0.3, dome_right_z=anat.dome_right_z - 3.2, lung_density=0.11,
                           half_depth=anat.half_depth * 1.12, vessel_scale=0.7, heart_scale=0.9,
                           apex_z=anat.apex_z + 1.0)
        elif f.term == "low lung volumes":
            changes.update(dome_right_z=anat.dome_right_z + 3.5, lung_density=anat.lung_density + 0.05)
        elif f.term == "diaphragm elevation":
            changes["elevated_side"] = f.side if f.side in ("left", "right") else "right"
    return changes


# ----------------------------------------------------------------------------------- handlers
SMALL_EFFUSION_FILL = (0.55, 0.65)  # fluid level of a small effusion, as a fraction of recess floor -> dome crest


def _effusion(f, plan, volume, anat, rng):
    level_kind = SEVERITY_LEVEL.get(f.severity, 1)
    out = []
    for side in sides_of(f, rng):
        crest = anat.dome_crest(side)
        lo, hi = side_box(anat, side, -25.0, crest)
        box, _ = roi(volume, lo, hi)
        _, _, z = box_coords(volume.grid, box)
        has = (volume.lung[box] > 0.3).any(axis=(1, 2))
        bottom = float(z[has, 0, 0].min()) if has.any() else crest - 6.0  # floor of the posterior recess
        level = (bottom + rng.uniform(*SMALL_EFFUSION_FILL) * (crest - bottom),  # posterior recess only
                 crest + rng.uniform(0.5, 2.5), crest + rng.uniform(6.0, 9.0))[level_kind]
        meniscus = (0.8, 2.5, 4.0)[level_kind]
        box, offset = roi(volume, lo, [hi[0], hi[1], level + meniscus + 1.0])
        x, y, z = box_coords(volume.grid, box)
        surface = level + meniscus * np.clip(lung_radius(anat, side, x, y, z), 0, 1.2) ** 4
        ml = replace_lung(plan, volume, box, offset, occupancy(z - surface, volume.grid.voxel_cm), MU["water"])
        out.append({"side": "left" if side > 0 else "right", "level_z_cm": round(level, 2), "volume_ml": round(ml)})
    return {"placements": out}


def _pneumothorax(f, plan, volume, anat, rng):
    gap = (1.8, 3.0, 4.5)[SEVERITY_LEVEL.get(f.severity, 1)]
    out = []
    for side in sides_of(f, rng):
        lo, hi = side_box(anat, side, 0.0, 22.0)
        box, offset = roi(volume, lo, hi)
        x, y, z = box_coords(volume.grid, box)
        xc, yc, a, b = anat.lung_ellipse(side, z)
        rim = gap * np.clip((z + 3.0) / (anat.apex_z + 3.0), 0.0, 1.0) ** 0.6  # widest at the apex
        radius = lung_radius(anat, side, x, y, z)
        inner = (1.0 - radius) * np.minimum(a, b)  # ~ distance to the parietal pleura
        air = np.maximum(occupancy(inner - rim, volume.grid.voxel_cm),  # lateral rim
                         occupancy((anat.apex_z - gap) - z, volume.grid.voxel_cm))  # apical cap
        replace_lung(plan, volume, box, offset, air, MU["air"])
        zs = np.linspace(-1.5, anat.apex_z - gap, 16)  # visceral pleural line in the coronal plane
        xc_l, _, a_l, _ = anat.lung_ellipse(side, zs)
        rim_l = gap * np.clip((zs + 3.0) / (anat.apex_z + 3.0), 0.0, 1.0) ** 0.6
        xs = xc_l + side * np.maximum(a_l - rim_l, 0.3)
        pts = np.stack([xs, np.full_like(zs, 0.8), zs], 1)
        top = np.array([[xc_l[-1] - side * 0.8 * a_l[-1], 1.5, anat.apex_z - gap - 0.2]])
        plan.add_tubes(polyline_tubes(np.concatenate([pts, top]), 1.2, 0.03, MU["soft"], up=(0.0, 1.0, 0.0)))
        out.append({"side": "left" if side > 0 else "right", "apical_gap_cm": gap})
    return {"placements": out}


def _opacity(f, plan, volume, anat, rng, density: float | None = None):
    level = SEVERITY_LEVEL.get(f.severity, 1)
    dense = density if density is not None else (0.95 if f.subtype in ("consolidation", "pneumonia") else 0.75)
    out = []
    for side in sides_of(f, rng):
        labels = lobe_labels(f, side)
        if f.zone == "retrocardiac":
            labels = [6]
        centre = lobe_point(volume, labels, rng)
        radius = (2.6, 4.0, 7.0)[level] * rng.uniform(0.85, 1.15)
        box, offset = roi(volume, centre - radius - 1.5, centre + radius + 1.5)
        x, y, z = box_coords(volume.grid, box)
        dist = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + ((z - centre[2]) / 1.2) ** 2)
        inside = np.clip((radius - dist) / 1.2, 0.0, 1.0) * np.isin(volume.lobe[box], labels)
        ml = replace_lung(plan, volume, box, offset, inside * dense, MU["soft"])
        out.append({"side": "left" if side > 0 else "right", "lobe_labels": labels,
                    "centre_cm": np.round(centre, 2).tolist(), "radius_cm": round(radius, 2), "volume_ml": round(ml)})
    return {"placements": out}


def _atelectasis(f, plan, volume, anat, rng):
    out = []
    for side in sides_of(f, rng):
        xc = float(anat.lung_ellipse(side, np.array(0.0))[0])
        centre = np.array([xc + rng.uniform(-1.5, 1.5), rng.uniform(-2.0, 2.5), anat.dome_crest(side) + rng.uniform(1.5, 4)])
        half_len = rng.uniform(2.0, 3.2)
        pts = np.stack([centre - [half_len, 0, 0.2], centre + [half_len, 0, -0.2]])
        plan.add_tubes(polyline_tubes(pts, 0.14, 2.2, MU["soft"] - MU["lung"]))
        out.append({"side": "left" if side > 0 else "right", "centre_cm": np.round(centre, 2).tolist()})
    return {"placements": out}


def _lesion(f, plan, volume, anat, rng):
    kind = f.term
    out = []
    for side in sides_of(f, rng):
        count = int(rng.integers(1, 4)) if kind == "calcified granuloma" else 1
        for _ in range(count):
            centre = lobe_point(volume, lobe_labels(f, side), rng)
            if kind == "calcified granuloma":
                radius, mu = rng.uniform(0.2, 0.35), MU["granuloma"] - MU["lung"]
            elif kind == "mass":
                radius, mu = rng.uniform(2.0, 3.2), MU["soft"] - MU["lung"]
            else:
                radius, mu = rng.uniform(0.6, 1.1), MU["soft"] - MU["lung"]
            radii = radius * rng.uniform(0.85, 1.15, 3)
            plan.ellipsoids.append((centre, radii, mu))
            if kind == "mass":  # lobulation
                plan.ellipsoids.append((centre + rng.normal(0, 0.5 * radius, 3), radii * 0.6, mu))
            out.append({"side": "left" if side > 0 else "right", "centre_cm": np.round(centre, 2).tolist(),
                        "radius_cm": round(float(radius), 2)})
    return {"placements": out}


def _edema(f, plan, volume, anat, rng):
    level = SEVERITY_LEVEL.get(f.severity, 1)
    box, offset = roi(volume, [-16, -10, -12], [16, 12, 12])
    x, y, z = box_coords(volume.grid, box)
    haze = np.zeros(volume.lung[box].shape, np.float32)
    for side in (-1, 1):
        h = anat.hilum(side)
        haze = np.maximum(haze, np.exp(-0.5 * (((x - h[0]) / 4.5) ** 2 + ((y - h[1]) / 5.0) ** 2 + ((z - h[2] + 1) / 5.5) ** 2)))
    replace_lung(plan, volume, box, offset, haze * (0.25, 0.4, 0.6)[level], MU["soft"], removes_lung=False)
    plan.vessel_gain = (0.4, -0.1)
    for side in (-1, 1):  # Kerley B lines at the lateral bases, perpendicular to the pleura
        for k in range(int(rng.integers(3, 7))):
            zb = anat.dome_crest(side) + 0.8 + 0.9 * k + rng.uniform(-0.2, 0.2)
            xc, _, a, _ = anat.lung_ellipse(side, np.array(zb))
            edge = float(xc + side * a)
            pts = np.array([[edge - side * 0.1, 0.5, zb], [edge - side * rng.uniform(1.2, 2.0), 0.5, zb]])
            plan.add_tubes(polyline_tubes(pts, 0.05, 1.4, MU["soft"] - MU["lung"]))
    return {"placements": [{"pattern": "perihilar haze, Kerley B, cephalisation"}]}


def _hiatal_hernia(f, plan, volume, anat, rng):
    floor = min(anat.dome_crest(-1), anat.dome_crest(1))
    centre = np.array([0.8, 2.8, floor + 2.2])
    radii = np.array([3.2, 2.4, 2.6]) * rng.uniform(0.8, 1.2)
    box, offset = roi(volume, centre - radii - 0.6, centre + radii + 0.6)
    x, y, z = box_coords(volume.grid, box)
    dist = np.sqrt(((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((z - centre[2]) / radii[2]) ** 2)
    sac = np.clip((1.0 - dist) * radii.min() / volume.grid.voxel_cm + 0.5, 0.0, 1.0)
    gas = occupancy(centre[2] - z, volume.grid.voxel_cm)  # gas above the air-fluid level
    target = np.where(gas > 0.5, MU["air"], MU["soft"])
    plan.mu_edits.append((offset, (sac * (target - volume.mu[box])).astype(np.float32)))
    plan.lung_removed.append((offset, (sac * volume.lung[box]).astype(np.float32)))
    return {"placements": [{"centre_cm": np.round(centre, 2).tolist(), "radii_cm": np.round(radii, 2).tolist()}]}


def _pleural_thickening(f, plan, volume, anat, rng):
    out = []
    for side in sides_of(f, rng):
        lo, hi = side_box(anat, side, 6.0, 22.0)
        box, offset = roi(volume, lo, hi)
        x, y, z = box_coords(volume.grid, box)
        xc, yc, a, b = anat.lung_ellipse(side, z)
        inner = (1.0 - lung_radius(anat, side, x, y, z)) * np.minimum(a, b)
        cap = np.maximum(occupancy(inner - 0.5, volume.grid.voxel_cm),
                         occupancy((anat.apex_z - 0.8) - z, volume.grid.voxel_cm))
        replace_lung(plan, volume, box, offset, cap * (z > 9.0), MU["soft"])
        out.append({"side": "left" if side > 0 else "right", "zone": "apical"})
    return {"placements": out}


def _scarring(f, plan, volume, anat, rng):
    out = []
    for side in sides_of(f, rng):
        centre = lobe_point(volume, lobe_labels(f, side) if f.zone or f.lobe else [1 if side < 0 else 4], rng)
        for _ in range(int(rng.integers(2, 5))):
            direction = rng.normal(0, 1, 3)
            direction /= np.linalg.norm(direction)
            length = rng.uniform(1.5, 3.5)
            plan.add_tubes(polyline_tubes(np.stack([centre, centre + direction * length]), 0.1, 0.1,
                                          MU["soft"] - MU["lung"]))
        out.append({"side": "left" if side > 0 else "right", "centre_cm": np.round(centre, 2).tolist()})
    return {"placements": out}


def _anatomic(f, plan, volume, anat, rng):
    if f.term == "osteopenia":
        plan.bone_scale = 0.72
    if f.term == "increased markings":
        plan.vessel_scale = 1.35
    return {"placements": [{"variant": f.term}]}


HANDLERS: dict[str, Callable] = {
    "pleural effusion": _effusion,
    "pneumothorax": _pneumothorax,
    "opacity": _opacity,
    "atelectasis": _atelectasis,
    "nodule": _lesion,
    "mass": _lesion,
    "calcified granuloma": _lesion,
    "edema": _edema,
    "hiatal hernia": _hiatal_hernia,
    "pleural thickening": _pleural_thickening,
    "scarring": _scarring,
    "device": hardware.device,
    "fracture": hardware.fracture,
    "degenerative spine": hardware.osteophytes,
    "aortic tortuosity": variants.aortic_tortuosity,
    "cardiomegaly": variants.cardiomegaly,
    "mediastinal widening": variants.mediastinal_widening,
    "hilar enlargement": variants.hilar_enlargement,
    "scoliosis": variants.scoliosis,
    **{term: _anatomic for term in ("emphysema", "low lung volumes", "diaphragm elevation", "increased markings",
                                    "osteopenia", "normal")},
}


def plan_findings(findings: list[Finding], volume: PhantomVolume, anat: Anatomy,
                  rng: np.random.Generator) -> FindingPlan:
    """Place every finding; unsupported terms are recorded as not rendered."""
    plan = FindingPlan()
    for f in findings:
        handler = HANDLERS.get(f.term)
        record: dict[str, Any] = {"term": f.term, "side": f.side, "rendered": handler is not None}
        if handler is not None:
            record.update(handler(f, plan, volume, anat, rng))
        plan.records.append(record)
    return plan
