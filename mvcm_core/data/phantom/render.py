"""Render one two-view study: ``render_study(findings, seed, size) -> {"PA": ..., "LL": ..., "meta": ...}``.

Work is split so a dataset costs little more than its findings:

1. **Base anatomy** (cached per anatomy variant and size): voxel organs projected slab-wise, analytic
   bones / vessels / airways / limbs, each kept as a separate line-integral channel per view.
2. **Findings** (per study): Δµ blocks edited into a bounding box of the cached volume and projected
   alone (log-domain additivity), extra analytic items (nodules, devices, lines) and channel gains.
3. **Physics** (per view): exposure, scatter, noise, detector, processing (see ``physics``).

Studies that share an anatomy id share the cached base; the dataset writer orders its work so each
worker touches one anatomy at a time.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mvcm_core.data.findings import Finding
from mvcm_core.data.phantom import findings3d, physics
from mvcm_core.data.phantom.anatomy import Anatomy, sample_anatomy, with_variant
from mvcm_core.data.phantom.geometry import VIEWS, SlabProjector, ViewGeometry
from mvcm_core.data.phantom.primitives import render_ellipsoids, render_tubes
from mvcm_core.data.phantom.skeleton import arms, shoulder_girdle, trunk_bones
from mvcm_core.data.phantom.vessels import airway_tubes, vessel_segments, vessel_tubes
from mvcm_core.data.phantom.visibility import visible_views
from mvcm_core.data.phantom.volume import PhantomVolume, build_volume

DEFAULT_POOL = 64  # distinct base anatomies when rendering a dataset
_CACHE_SIZE = 8


@dataclass
class BaseRender:
    """Cached per-view channels of one anatomy at one detector size."""

    anatomy: Anatomy
    volume: PhantomVolume
    views: dict[str, ViewGeometry]
    projectors: dict[str, SlabProjector]
    channels: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


_CACHE: OrderedDict[tuple, BaseRender] = OrderedDict()
_VOLUMES: OrderedDict[tuple, PhantomVolume] = OrderedDict()  # plan_study's volumes, without projections
DEPTH_TERMS = ("opacity", "nodule", "mass")  # lesions placed at a point in a lobe: their depth is asked


def view_geometry(anat: Anatomy, view: str, size: int) -> ViewGeometry:
    """The PA / LL geometry for an anatomy (detector against the chest / left side)."""
    if view == "PA":
        return ViewGeometry("PA", detector_cm=anat.front_y() - 0.5, size=size, centre_z_cm=-3.0 * anat.scale,
                            rotation_deg=anat.rotation_pa_deg)
    return ViewGeometry("LL", detector_cm=anat.side_x() + 0.5, size=size, centre_z_cm=-3.0 * anat.scale,
                        centre_u_cm=0.0, rotation_deg=anat.rotation_ll_deg)


def build_base(anat: Anatomy, size: int) -> BaseRender:
    """Render (or fetch from the small LRU cache) the anatomy channels of both views."""
    key = (anat.key(), size)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    volume = build_volume(anat)
    starts, ends, radii = vessel_segments(anat, volume)
    upper = 0.5 * (starts[:, 2] + ends[:, 2]) > 2.0
    trunk = trunk_bones(anat)
    airways = airway_tubes(anat)
    base = BaseRender(anat, volume, {}, {})
    for name in VIEWS:
        view = view_geometry(anat, name, size)
        projector = SlabProjector(volume.grid, view)
        girdle, heads = shoulder_girdle(anat, name)
        head_map = render_ellipsoids(view, [h[0] for h in heads], [h[1] for h in heads], [h[2] for h in heads])
        base.views[name], base.projectors[name] = view, projector
        base.channels[name] = {
            "soft": projector.project(volume.mu) + render_tubes(arms(anat, name), view),
            "bone": render_tubes(trunk, view) + render_tubes(girdle, view) + head_map,
            "vessels_upper": render_tubes(vessel_tubes(starts, ends, radii, anat, keep=upper), view),
            "vessels_lower": render_tubes(vessel_tubes(starts, ends, radii, anat, keep=~upper), view),
            "airways": render_tubes(airways, view),
            "lung_path": projector.project(volume.lung),
        }
    _CACHE[key] = base
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return base


def compose_paths(base: BaseRender, plan: findings3d.FindingPlan, view: str) -> np.ndarray:
    """Total line integral of one view: anatomy channels with the findings applied."""
    ch = base.channels[view]
    geometry, projector = base.views[view], base.projectors[view]
    upper_gain, lower_gain = plan.vessel_gain
    vessels = ch["vessels_upper"] * (1.0 + upper_gain) ** 1.5 + ch["vessels_lower"] * (1.0 + lower_gain) ** 1.5
    removed = np.zeros_like(ch["lung_path"])
    for offset, block in plan.lung_removed:
        removed += projector.project(block, offset)
    vessels = vessels * np.clip(1.0 - removed / np.maximum(ch["lung_path"], 0.5), 0.0, 1.0)
    total = ch["soft"] + ch["bone"] * plan.bone_scale + vessels * plan.vessel_scale + ch["airways"]
    for offset, block in plan.mu_edits:
        total += projector.project(block, offset)
    if len(plan.tubes):
        total += render_tubes(plan.tubes, geometry)
    if plan.ellipsoids:
        total += render_ellipsoids(geometry, *map(np.array, zip(*plan.ellipsoids)))
    if plan.blobs:
        from mvcm_core.data.phantom.primitives import render_blobs

        total += render_blobs(geometry, *map(np.array, zip(*plan.blobs)))
    return np.maximum(total, 0.0)


def render_study(findings: list[Finding], seed: int, size: int = 256, *, anatomy_id: int | None = None,
                 pool: int = DEFAULT_POOL, processed: bool = True) -> dict[str, Any]:
    """Render a PA and a left-lateral radiograph of a phantom carrying ``findings``.

    Args:
        findings: structured findings (unknown or unsupported terms render nothing).
        seed: study seed; everything (anatomy choice, finding placement, exposure, noise) follows it.
        size: detector pixels per side (43 cm field).
        anatomy_id: base anatomy to use; default ``seed % pool``.
        pool: number of distinct base anatomies when ``anatomy_id`` is None.
        processed: also return the processed images (else only line integrals and signal).

    Returns:
        ``{"PA": {...}, "LL": {...}, "meta": {...}}``; each view has ``image`` (float ``[0, 1]``,
        ``[size, size]``), ``stored`` (uint16, 12-bit), ``path`` (line integrals) and ``acquisition``;
        ``meta`` holds the anatomy, finding placements and their visibility per view.
    """
    if size < 32 or size > 2048:
        raise ValueError(f"size must be between 32 and 2048 pixels, got {size}")
    rng, anatomy_id, anat = study_anatomy(findings, seed, anatomy_id, pool)
    base = build_base(anat, size)
    plan = findings3d.plan_findings(findings, base.volume, anat, rng)
    out: dict[str, Any] = {}
    for view in VIEWS:
        path = compose_paths(base, plan, view)
        acq = physics.sample_acquisition(rng, view)
        detected = physics.expose(path, base.views[view].pixel_cm, acq, rng, lateral=view == "LL")
        entry = {"path": path, "detected": detected, "acquisition": acq.to_dict(),
                 "pixel_mm": base.views[view].pixel_cm * 10.0}
        if processed:
            image = physics.process(detected, base.views[view].pixel_cm, acq)
            entry.update(image=image, stored=physics.to_stored(image))
        out[view] = entry
    out["meta"] = {
        "seed": int(seed),
        "size": size,
        "anatomy_id": anatomy_id,
        "anatomy": anat.to_dict(),
        "placements": plan.records,
        "depths": lesion_depths(plan.records, anat),
        "visibility": [{"finding": f.to_dict(), "views": visible_views(f)} for f in findings],
    }
    return out


def study_anatomy(findings: list[Finding], seed: int, anatomy_id: int | None = None, pool: int = DEFAULT_POOL
                  ) -> tuple[np.random.Generator, int, Anatomy]:
    """A study's random stream, base anatomy id and anatomy (with its findings' organ changes)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x57D]))
    anatomy_id = int(seed) % pool if anatomy_id is None else int(anatomy_id)
    anat = sample_anatomy(anatomy_id)
    changes = findings3d.anatomy_changes(findings, anat)
    return rng, anatomy_id, (with_variant(anat, **changes) if changes else anat)


def plan_study(findings: list[Finding], seed: int, *, anatomy_id: int | None = None, pool: int = DEFAULT_POOL
               ) -> tuple[Anatomy, findings3d.FindingPlan]:
    """The placements :func:`render_study` makes for the same arguments, without projecting anything."""
    rng, _, anat = study_anatomy(findings, seed, anatomy_id, pool)
    key = anat.key()
    if key not in _VOLUMES:
        _VOLUMES[key] = build_volume(anat)
        while len(_VOLUMES) > _CACHE_SIZE:
            _VOLUMES.popitem(last=False)
    _VOLUMES.move_to_end(key)
    return anat, findings3d.plan_findings(findings, _VOLUMES[key], anat, rng)


def lesion_depths(records: list[dict[str, Any]], anat: Anatomy) -> list[dict[str, Any]]:
    """Where each placed opacity, nodule or mass lies front to back in its lung.

    ``depth`` is ``(y - y_c) / b`` of the lung's cross-section at the lesion's height: -1 at the
    anterior edge, 0 in the middle, +1 at the posterior edge. Projection keeps no depth, so a PA
    cannot show it; the lateral does.
    """
    out = []
    for record in records:
        if record["term"] not in DEPTH_TERMS:
            continue
        for place in record.get("placements", []):
            _, y, z = place["centre_cm"]
            _, y_centre, _, half_depth = anat.lung_ellipse(1 if place["side"] == "left" else -1, np.array(z))
            out.append({"term": record["term"], "side": place["side"],
                        "depth": round(float((y - y_centre) / half_depth), 3)})
    return out


def base_key(findings: list[Finding], seed: int, pool: int = DEFAULT_POOL) -> tuple:
    """The base anatomy a study will use (studies with equal keys share one cached render)."""
    anat = sample_anatomy(int(seed) % pool)
    return (anat.seed, tuple(sorted(findings3d.anatomy_changes(findings, anat).items())))


def clear_cache() -> None:
    """Drop the cached base anatomies and volumes."""
    _CACHE.clear()
    _VOLUMES.clear()
