"""Analytic bones and limbs: spine, ribs, costal cartilage, sternum, clavicles, scapulae, humeri, arms.

Everything is an elliptic-cylinder segment (:class:`~mvcm_core.data.phantom.primitives.Tubes`) with a
cortical shell around a spongiosa core, attenuation given relative to the surrounding soft tissue.
Trunk bones are shared by both views; the shoulder girdle and arms differ per view because patients
re-pose (PA: arms down, shoulders rolled forward; lateral: arms raised).
"""

from __future__ import annotations

import numpy as np

from mvcm_core.data.phantom.anatomy import MU, Anatomy, vertebra_z
from mvcm_core.data.phantom.primitives import Tubes, polyline_tubes

CORTEX = MU["cortical"] - MU["soft"]
SPONGIOSA = 0.36 - MU["soft"]  # rib / vertebral cancellous bone, a little denser than ICRU-46 spongiosa

# vertebral body width, depth, height (cm) by level (0 = C7, 1..12 = T1..T12, 13.. = L1..)
_LEVELS = [-3, 0, 1, 6, 12, 13, 16]
_WIDTH = [1.8, 2.4, 2.8, 3.0, 4.2, 4.4, 4.8]
_DEPTH = [1.5, 1.6, 1.6, 2.6, 3.2, 3.4, 3.5]
_HEIGHT = [1.3, 1.4, 1.5, 1.9, 2.3, 2.5, 2.6]

# per rib (1..12): angular end of the bony rib, vertical drop along it, half-height
_RIB_END_DEG = [150, 152, 154, 155, 155, 153, 150, 140, 128, 118, 96, 72]
_RIB_DROP = [3.2, 5.5, 7.0, 8.0, 8.5, 8.6, 8.4, 7.6, 6.6, 5.8, 4.2, 3.0]
_RIB_HALF_H = [0.9, 0.6, 0.58, 0.58, 0.6, 0.6, 0.6, 0.6, 0.58, 0.55, 0.5, 0.45]


def _bone(points, half_h, half_w, anat: Anatomy, up=(0.0, 0.0, 1.0), cortex: float = 0.1,
          density: np.ndarray | None = None, core: float = SPONGIOSA) -> Tubes:
    """Cortical shell + cancellous core along ``points``; ``density [K]`` scales it per point."""
    tubes = polyline_tubes(points, half_h, half_w, CORTEX * anat.bone_density, up=up, cortex_cm=cortex,
                           core_mu=core * anat.bone_density)
    if density is not None:  # shell and core segments follow the same point order
        per_seg = 0.5 * (density[1:] + density[:-1])
        tubes.mu = tubes.mu * np.concatenate([per_seg, per_seg])[: len(tubes)]
    return tubes


def spine(anat: Anatomy, levels: range = range(-3, 17)) -> Tubes:
    """Vertebral bodies (discs are the gaps), pedicles, spinous and transverse processes."""
    s = anat.scale
    parts = []
    for level in levels:
        z = vertebra_z(level) if level >= 1 else vertebra_z(1) + (1 - level) * 2.0 * s
        width, depth, height = (np.interp(level, _LEVELS, v) * s for v in (_WIDTH, _DEPTH, _HEIGHT))
        x, y = (float(c) for c in anat.spine_centre(np.array(z)))
        body_h = height * 0.8 if level >= 1 else height * 0.85
        parts.append(_bone([[x, y, z - body_h / 2], [x, y, z + body_h / 2]], width / 2, depth / 2, anat,
                           up=(1.0, 0.0, 0.0), cortex=0.07, core=MU["spongiosa"] - MU["soft"]))
        back = y + depth / 2
        for side in (-1, 1):
            px = x + side * (width / 2 - 0.45 * s)
            parts.append(_bone([[px, back - 0.3, z + 0.2], [px, back + 1.3 * s, z + 0.2]], 0.5 * s, 0.34 * s, anat,
                               cortex=0.07))
            if level >= 1:
                parts.append(_bone([[px, back + 1.3 * s, z + 0.3], [x + side * (width / 2 + 2.0 * s), back + 2.2 * s,
                                                                    z + 0.5]], 0.45 * s, 0.35 * s, anat, cortex=0.1))
        parts.append(_bone([[x, back + 1.6 * s, z + 0.3], [x, back + 3.8 * s, z - 1.5 * s]], 0.5 * s, 0.3 * s, anat,
                           up=(0.0, 0.0, 1.0), cortex=0.1))
    return Tubes.concat(parts)


def rib_path(anat: Anatomy, number: int, side: int, samples: int = 22) -> np.ndarray:
    """Centreline ``[K, 3]`` of rib ``number`` (1-12) on ``side`` (-1 right, +1 left), head to tip."""
    s = anat.scale
    z_head = vertebra_z(number) + 0.7 * s
    x_head, y_head = (float(c) for c in anat.spine_centre(np.array(z_head)))
    start_deg, end_deg = 16.0, _RIB_END_DEG[number - 1]
    t = np.linspace(0.0, 1.0, samples)
    phi = np.deg2rad(start_deg + (end_deg - start_deg) * t)
    z = z_head - _RIB_DROP[number - 1] * s * t**1.9
    cav_w, cav_d = anat.cavity_axes(z)
    ring_w = cav_w + 0.75 * s
    ring_d = cav_d + 0.75 * s
    if number <= 2:  # the first ribs curve tightly under the clavicles
        ring_w = ring_w * (0.92 + 0.04 * number)
    x = side * ring_w * np.sin(phi) + x_head * (1 - t)
    y = 0.4 * s + ring_d * np.cos(phi)
    path = np.stack([x, y, z], axis=1)  # [K, 3]
    head = np.array([[x_head + side * 1.5 * s, y_head + 0.4 * s, z_head]])
    return np.concatenate([head, path], axis=0)


def ribs(anat: Anatomy, skip: set[tuple[int, int]] | None = None) -> Tubes:
    """All 24 ribs (cortex + spongiosa) and their costal cartilages."""
    s = anat.scale
    parts = []
    for number in range(1, 13):
        for side in (-1, 1):
            if skip and (number, side) in skip:
                continue
            path = rib_path(anat, number, side)
            k = len(path)
            half_h = np.linspace(_RIB_HALF_H[number - 1], _RIB_HALF_H[number - 1] * 1.3, k) * s
            half_h[0] = 0.45 * s  # rib head
            density = np.clip(1.25 - 0.75 * np.linspace(0.0, 1.0, k) ** 1.5, 0.45, 1.0)  # anterior ribs fainter
            parts.append(_bone(path, half_h, 0.3 * s, anat, cortex=0.12, density=density))
            if number <= 10:  # costal cartilage from the tip to the sternum (nearly invisible)
                tip = path[-1]
                _, depth = anat.body_axes(np.array(tip[2]))
                end = [side * 1.8 * s, -float(depth) + anat.fat_cm * 0.6 + 1.6 * s,
                       min(tip[2] + (1.5 if number <= 7 else 4.0) * s, vertebra_z(2))]
                parts.append(polyline_tubes(np.stack([tip, end]), 0.6 * s, 0.35 * s, MU["cartilage"] - MU["soft"]))
    return Tubes.concat(parts)


def sternum(anat: Anatomy) -> Tubes:
    """Manubrium and sternal body."""
    s = anat.scale
    top, angle, bottom = vertebra_z(2) - 0.3 * s, vertebra_z(4) - 0.5 * s, vertebra_z(9) - 0.5 * s
    points = []
    for z in (top, angle, bottom):
        _, depth = anat.body_axes(np.array(z))
        points.append([0.0, -float(depth) + 0.6 * anat.fat_cm + 1.0 * s, z])
    man = _bone(points[:2], 2.4 * s, 0.6 * s, anat, up=(1.0, 0.0, 0.0), cortex=0.08)
    body = _bone(points[1:], 1.5 * s, 0.5 * s, anat, up=(1.0, 0.0, 0.0), cortex=0.08)
    return Tubes.concat([man, body])


def clavicles(anat: Anatomy) -> Tubes:
    """S-shaped clavicles rising laterally to the acromion."""
    s = anat.scale
    parts = []
    _, depth = anat.body_axes(np.array(11.5 * s))
    for side in (-1, 1):
        t = np.linspace(0.0, 1.0, 12)
        x = side * (2.0 * s + (0.84 * anat.half_width - 2.0 * s) * t)
        z = 11.2 * s + 2.6 * s * t + 0.5 * s * np.sin(np.pi * t)
        y = -float(depth) + 1.4 * s + 5.5 * s * t**1.6 - 1.0 * s * np.sin(np.pi * t)
        parts.append(_bone(np.stack([x, y, z], 1), np.linspace(0.85, 0.6, 12) * s, 0.62 * s, anat, cortex=0.16))
    return Tubes.concat(parts)


def shoulder_girdle(anat: Anatomy, view: str) -> tuple[Tubes, list[tuple[np.ndarray, np.ndarray, float]]]:
    """Scapulae and humeri for one view; also ellipsoids ``(centre, radii, mu)`` of the humeral heads."""
    s, w = anat.scale, anat.half_width
    parts, heads = [], []
    raised = view == "LL"
    for side in (-1, 1):
        glenoid = np.array([side * (0.86 * w), 3.0 * s, 11.6 * s])
        medial = 0.66 * w if not raised else 0.5 * w
        top = np.array([side * medial, 9.0 * s, 12.6 * s])
        angle = np.array([side * (medial + 1.2 * s), 8.6 * s, -1.5 * s])
        if raised:  # arms up: the scapula rotates, its inferior angle swings laterally and forwards
            angle = np.array([side * (0.78 * w), 5.5 * s, 0.5 * s])
        parts.append(_bone(np.stack([glenoid, 0.5 * (glenoid + angle) + [0, 1.0 * s, 0], angle]), 0.55 * s, 0.45 * s,
                           anat, cortex=0.15))
        parts.append(_bone(np.stack([top, angle]), 0.35 * s, 0.3 * s, anat, cortex=0.1))
        for frac in (0.25, 0.5, 0.75):  # the thin blade, as flat strips between the borders
            upper = top + frac * (glenoid - top)
            parts.append(polyline_tubes(np.stack([upper, angle + frac * (glenoid - angle) * 0.3]), 1.7 * s, 0.12 * s,
                                        (CORTEX * 0.6) * anat.bone_density, up=glenoid - top))
        spine_pts = np.stack([top + [0, 0.3 * s, -1.5 * s], glenoid + [side * 1.0 * s, 1.5 * s, 2.0 * s]])
        parts.append(_bone(spine_pts, 0.6 * s, 0.35 * s, anat, cortex=0.12))
        head = glenoid + np.array([side * 2.1 * s, -0.8 * s, 0.3 * s])
        heads.append((head, np.array([2.3, 2.3, 2.4]) * s, 0.25 * anat.bone_density))
        if raised:
            elbow = head + np.array([-side * 3.0 * s, -6.0 * s, 28.0 * s])
        else:
            elbow = head + np.array([side * 2.0 * s, -1.0 * s, -28.0 * s])
        parts.append(polyline_tubes(np.stack([head, elbow]), 1.1 * s, 1.1 * s, CORTEX * anat.bone_density,
                                    cortex_cm=0.35 * s, core_mu=MU["fat"] - MU["soft"]))
    return Tubes.concat(parts), heads


def arms(anat: Anatomy, view: str) -> Tubes:
    """Soft tissue of the arms (attenuation relative to air): at the sides (PA) or raised (LL)."""
    s, w = anat.scale, anat.half_width
    parts = []
    for side in (-1, 1):
        shoulder = np.array([side * (0.86 * w + 2.0 * s), 2.0 * s, 11.0 * s])
        if view == "LL":  # raised arms: mostly above the field, overlapping the apices a little
            start = shoulder + np.array([-side * 2.0, -2.5, 5.0]) * s
            path = np.stack([start, start + np.array([-side * 2.0, -5.0, 30.0]) * s])
        else:
            path = np.stack([shoulder + np.array([side * 1.5, 0.0, 1.0]) * s,
                             shoulder + np.array([side * 3.0, -1.0, -34.0]) * s])
        radius = (4.2 + 0.4 * anat.fat_cm) * s
        parts.append(polyline_tubes(path, radius, radius * 0.9, MU["soft"], up=(1.0, 0.0, 0.0)))
    return Tubes.concat(parts)


def trunk_bones(anat: Anatomy) -> Tubes:
    """Bones shared by both views."""
    return Tubes.concat([spine(anat), ribs(anat), sternum(anat), clavicles(anat)])


__all__ = ["arms", "clavicles", "rib_path", "ribs", "shoulder_girdle", "spine", "sternum",
           "trunk_bones"]
