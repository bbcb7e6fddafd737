"""Findings that enlarge or move an organ, applied as edits of the cached base anatomy.

Cardiomegaly (larger heart ellipsoids), aortic tortuosity (unfolded arch and descending aorta with a
calcified knob), mediastinal widening, hilar enlargement (lobulated nodes) and scoliosis (the curved
spine and its ribs replace the straight ones); no anatomy rebuild is needed for any of them.
"""

from __future__ import annotations

import numpy as np

from mvcm_core.data.phantom import hardware
from mvcm_core.data.phantom.anatomy import MU, with_variant
from mvcm_core.data.phantom.placement import SEVERITY_LEVEL, grow_region, replace_lung, roi, sides_of
from mvcm_core.data.phantom.primitives import box_coords, capsule_sd, ellipsoid_sd, occupancy, rotation_matrix
from mvcm_core.data.phantom.skeleton import trunk_bones


def _heart_occupancy(frame: dict, x, y, z, voxel: float) -> np.ndarray:
    main = occupancy(ellipsoid_sd(x, y, z, frame["centre"], frame["radii"],
                                  rotation_matrix(frame["yaw"], frame["pitch"])), voxel)
    atrium = occupancy(ellipsoid_sd(x, y, z, frame["ra_centre"], frame["ra_radii"]), voxel)
    return np.maximum(main, atrium) * occupancy(frame["floor_z"] - z, voxel)


def cardiomegaly(f, plan, volume, anat, rng):
    scale = (1.2, 1.3, 1.42)[SEVERITY_LEVEL.get(f.severity, 1)]
    big = with_variant(anat, heart_scale=max(scale, anat.heart_scale)).heart_frame()
    reach = big["radii"].max() + 1.0
    box, offset = roi(volume, big["centre"] - reach - [3, 0, 0], big["centre"] + reach)
    x, y, z = box_coords(volume.grid, box)
    vx = volume.grid.voxel_cm
    ml = grow_region(plan, volume, box, offset, _heart_occupancy(big, x, y, z, vx),
                      _heart_occupancy(anat.heart_frame(), x, y, z, vx), MU["blood"])
    return {"placements": [{"heart_scale": round(scale, 2), "added_ml": round(ml)}]}


def _tube_occupancy(grid_box, volume, points, radii) -> np.ndarray:
    x, y, z = grid_box
    occ = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), np.float32)
    for a, b, ra, rb in zip(points[:-1], points[1:], radii[:-1], radii[1:]):
        occ = np.maximum(occ, occupancy(capsule_sd(x, y, z, a, b, 0.5 * (ra + rb)), volume.grid.voxel_cm))
    return occ


def aortic_tortuosity(f, plan, volume, anat, rng):
    new_points, new_radii = with_variant(anat, aorta_unfold=1.0).aorta_path()
    old_points, old_radii = anat.aorta_path()
    box, offset = roi(volume, new_points.min(0) - 2.0, new_points.max(0) + 2.0)
    coords = box_coords(volume.grid, box)
    grow_region(plan, volume, box, offset, _tube_occupancy(coords, volume, new_points, new_radii),
                 _tube_occupancy(coords, volume, old_points, old_radii), MU["blood"])
    return hardware.aortic_calcification(f, plan, volume, with_variant(anat, aorta_unfold=1.0), rng)


def mediastinal_widening(f, plan, volume, anat, rng):
    s = anat.scale
    box, offset = roi(volume, [-7, -8, 3.0 * s], [7, 5, 16])
    x, y, z = box_coords(volume.grid, box)
    column = (np.abs(x) / (2.6 * s)) ** 2 + ((y + 1.0 * s) / (5.5 * s)) ** 2
    wide = occupancy((np.sqrt((np.abs(x) / (4.2 * s)) ** 2 + ((y + 1.0 * s) / (5.5 * s)) ** 2) - 1.0) * 4.0,
                     volume.grid.voxel_cm)
    ml = grow_region(plan, volume, box, offset, wide, (column <= 1.0).astype(np.float32), MU["soft"])
    return {"placements": [{"added_ml": round(ml)}]}


def hilar_enlargement(f, plan, volume, anat, rng):
    out = []
    for side in sides_of(f, rng) if f.side else [-1, 1]:
        centre = anat.hilum(side) + np.array([side * 1.0, 0.2, -0.5])
        for k in range(3):  # lobulated nodes
            c = centre + rng.normal(0.0, 0.8, 3)
            radius = rng.uniform(1.2, 1.8)
            box, offset = roi(volume, c - radius - 0.6, c + radius + 0.6)
            x, y, z = box_coords(volume.grid, box)
            node = occupancy(np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) - radius, volume.grid.voxel_cm)
            replace_lung(plan, volume, box, offset, node, MU["soft"])
        out.append({"side": "left" if side > 0 else "right", "centre_cm": np.round(centre, 2).tolist()})
    return {"placements": out}


def scoliosis(f, plan, volume, anat, rng):
    sign = -1.0 if f.side == "right" else 1.0
    bow = sign * (1.6, 2.4, 3.4)[SEVERITY_LEVEL.get(f.severity, 1)]
    plan.add_tubes(trunk_bones(with_variant(anat, scoliosis_cm=bow)))  # curved spine and its ribs ...
    plan.add_tubes(trunk_bones(anat).scaled(-1.0))  # ... replace the straight ones
    return {"placements": [{"lateral_bow_cm": bow}]}


