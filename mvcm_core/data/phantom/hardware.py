"""Devices, fractures and other dense analytic findings (reference §3, devices and bones).

* pacemaker: titanium generator under the left (or right) clavicle, MP35N leads through the
  subclavian vein and SVC to the right atrium and the right-ventricular apex, platinum tips;
* sternotomy: 5-7 steel wire loops around the sternum with anterior twists;
* central venous catheter: barium-striped tube from the right subclavian vein to the cavo-atrial junction;
* surgical clips: small steel bars;
* rib fracture: a gap with step-off (acute) or fusiform callus (healed);
* degenerative spine: marginal osteophytes; aortic tortuosity: calcified knob rim.

Handlers take ``(finding, plan, volume, anatomy, rng)`` and return a placement record.
"""

from __future__ import annotations

import numpy as np

from mvcm_core.data.findings import Finding
from mvcm_core.data.phantom.anatomy import MU, vertebra_z
from mvcm_core.data.phantom.primitives import polyline_tubes
from mvcm_core.data.phantom.skeleton import CORTEX, SPONGIOSA, rib_path

LEAD_MU = 4.0  # MP35N coil, volume-averaged with its insulation
CATHETER_MU = 0.45  # polyurethane with a barium sulphate stripe


def _side_of(finding: Finding, rng: np.random.Generator, default: int | None = None) -> int:
    if finding.side in ("left", "right"):
        return 1 if finding.side == "left" else -1
    return default if default is not None else int(rng.choice([-1, 1]))


def _pacemaker(plan, anat, rng, side: int) -> dict:
    s = anat.scale
    _, depth = anat.body_axes(np.array(9.0 * s))
    can = np.array([side * 7.5 * s, -float(depth) + 0.9, 9.0 * s])
    plan.add_tubes(polyline_tubes(np.stack([can - [0, 0.4, 0], can + [0, 0.4, 0]]), 2.4, 2.1, MU["titanium"] * 0.25,
                                  up=(0.0, 0.0, 1.0)))
    plan.add_tubes(polyline_tubes(np.stack([can + [side * -0.8, -0.1, 1.7], can + [side * 0.8, -0.1, 1.7]]),
                                  0.5, 0.35, 0.3))  # epoxy header with set screws
    vein = np.array([side * 4.5 * s, -3.5 * s, 11.0 * s])
    svc = np.array([-2.3 * s, -1.4 * s, 7.0 * s])
    ra = np.array([-2.6 * s, -2.0 * s, -1.5 * s])
    rv_apex = np.array([3.6 * s, -6.0 * s, -5.2 * s])
    for tip, via in ((rv_apex, np.array([0.5 * s, -4.5 * s, -3.5 * s])), (ra + [0.5, -1.5, 1.5], ra)):
        pts = np.stack([can + [0, -0.2, 1.5], 0.5 * (can + vein) + [0, 0.5, 1.0], vein, svc, ra, via, tip])
        plan.add_tubes(polyline_tubes(pts, 0.1, 0.1, LEAD_MU))
        plan.ellipsoids.append((tip, np.array([0.15, 0.15, 0.3]), MU["platinum"] * 0.3))
    return {"subtype": "pacemaker", "generator_cm": np.round(can, 2).tolist(), "rv_tip_cm": np.round(rv_apex, 2).tolist()}


def _sternotomy(plan, anat, rng) -> dict:
    s = anat.scale
    count = int(rng.integers(5, 8))
    zs = np.linspace(vertebra_z(2) - 1.0, vertebra_z(8), count)
    for z in zs:
        _, depth = anat.body_axes(np.array(z))
        front = -float(depth) + 0.6 * anat.fat_cm + 1.0 * s
        angle = np.linspace(0, 2 * np.pi, 17)
        loop = np.stack([1.9 * s * np.cos(angle), front + 0.8 * np.sin(angle), z + 0.15 * np.sin(2 * angle)], 1)
        plan.add_tubes(polyline_tubes(loop, 0.04, 0.04, MU["steel"]))
        knot = np.array([rng.uniform(-0.4, 0.4), front - 0.9, z])
        plan.add_tubes(polyline_tubes(np.stack([knot - [0, 0, 0.3], knot + [0.1, 0, 0.4]]), 0.09, 0.09, MU["steel"]))
    return {"subtype": "sternotomy wires", "loops": count}


def _catheter(plan, anat, rng) -> dict:
    s = anat.scale
    pts = np.array([[-9.0, -4.5, 14.5], [-6.0, -3.8, 12.2], [-3.2, -2.4, 10.2], [-2.4, -1.5, 7.0],
                    [-2.2, -1.3, 2.2 + rng.uniform(-1.0, 1.0)]]) * s
    plan.add_tubes(polyline_tubes(pts, 0.12, 0.12, CATHETER_MU, cortex_cm=0.05, core_mu=0.0))
    return {"subtype": "central venous catheter", "tip_cm": np.round(pts[-1], 2).tolist()}


def _clips(plan, anat, rng) -> dict:
    count = int(rng.integers(2, 6))
    centre = np.array([rng.uniform(-6, 6), rng.uniform(-4, 2), rng.uniform(2, 9)])
    for _ in range(count):
        p = centre + rng.normal(0, 1.5, 3)
        d = rng.normal(0, 1, 3)
        d /= np.linalg.norm(d)
        plan.add_tubes(polyline_tubes(np.stack([p, p + 0.5 * d]), 0.05, 0.05, MU["steel"]))
    return {"subtype": "surgical clips", "count": count}


def device(f, plan, volume, anat, rng) -> dict:
    """Pacemaker, sternotomy wires, central line or clips (by ``subtype``; random when unspecified)."""
    kind = (f.subtype or "").lower()
    if not kind:
        kind = str(rng.choice(["pacemaker", "sternotomy", "catheter", "clip"]))
    if "pace" in kind or "defib" in kind or "icd" in kind:
        return {"placements": [_pacemaker(plan, anat, rng, _side_of(f, rng, default=1))]}
    if "stern" in kind or "wire" in kind or "suture" in kind:
        return {"placements": [_sternotomy(plan, anat, rng)]}
    if "clip" in kind or "staple" in kind:
        return {"placements": [_clips(plan, anat, rng)]}
    return {"placements": [_catheter(plan, anat, rng)]}


def fracture(f, plan, volume, anat, rng) -> dict:
    """Rib fracture: gap and step-off (acute) or callus (healed); other subtypes fall back to a rib."""
    side = _side_of(f, rng)
    number = int(rng.integers(4, 10))
    path = rib_path(anat, number, side)
    k = int(rng.integers(len(path) // 3, 2 * len(path) // 3))
    point, direction = path[k], path[k + 1] - path[k]
    direction /= np.linalg.norm(direction)
    healed = "heal" in (f.subtype or "") or "old" in (f.subtype or "") or rng.random() < 0.4
    s = anat.scale
    if healed:
        callus = polyline_tubes(np.stack([point - 0.9 * direction, point + 0.9 * direction]), 0.95 * s, 0.55 * s,
                                SPONGIOSA * 1.4)
        plan.add_tubes(callus)
    else:  # remove 2.5 mm of rib, displace the distal end a little
        gap = polyline_tubes(np.stack([point - 0.12 * direction, point + 0.12 * direction]), 0.7 * s, 0.35 * s,
                             -CORTEX)
        plan.add_tubes(gap)
        shift = np.array([0.0, 0.0, -0.25])
        plan.add_tubes(polyline_tubes(np.stack([point + 0.15 * direction + shift, point + 0.6 * direction + shift]),
                                      0.6 * s, 0.3 * s, CORTEX * 0.3))
    return {"placements": [{"side": "left" if side > 0 else "right", "rib": number,
                            "kind": "healed" if healed else "acute", "centre_cm": np.round(point, 2).tolist()}]}


def osteophytes(f, plan, volume, anat, rng) -> dict:
    """Marginal spurs at the vertebral end plates of the mid / lower thoracic spine."""
    levels = rng.choice(np.arange(5, 13), size=4, replace=False)
    for level in levels:
        z = vertebra_z(int(level))
        x, y = (float(c) for c in anat.spine_centre(np.array(z)))
        for edge in (-1, 1):
            base = np.array([x, y - 1.2 * anat.scale, z + edge * 0.95])
            tip = base + np.array([rng.uniform(-0.6, 0.6), -0.6, edge * 0.25])
            plan.add_tubes(polyline_tubes(np.stack([base, tip]), 0.22, 0.22, CORTEX))
    return {"placements": [{"levels": sorted(int(v) for v in levels)}]}


def aortic_calcification(f, plan, volume, anat, rng) -> dict:
    """Thin calcified rim over the aortic knob (the tortuous course itself is an anatomy variant)."""
    s = anat.scale
    angle = np.linspace(-0.5, 1.8, 10)
    knob = np.array([2.8 + 0.9 * anat.aorta_unfold, 2.0, 7.0 + 0.4 * anat.aorta_unfold]) * s
    arc = knob + np.stack([1.35 * s * np.cos(angle), 0.6 * np.sin(angle), 1.35 * s * np.sin(angle)], 1)
    plan.add_tubes(polyline_tubes(arc, 0.08, 0.5, CORTEX * 0.8, up=(0.0, 1.0, 0.0)))
    return {"placements": [{"knob_cm": np.round(knob, 2).tolist()}]}
