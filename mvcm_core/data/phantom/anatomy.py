"""Parametric adult thorax: ~30 sampled parameters and the shape functions every organ is built from.

Numbers follow ``reference/radiograph-simulation.md`` §2 (average adult, upright, full inspiration):
thorax 30-36 cm wide and 20-26 cm deep in men (x0.93 in women), right dome at T10 and about 1.5 cm
above the left, posterior costophrenic recesses the lowest lung (T12-L1), hila at T5-T7 with the
left higher, carina at T5, vertebral pitch 2.3 cm, heart about 13 cm wide (CTR 0.42-0.48).

Coordinates are LPS centimetres (see :mod:`mvcm_core.data.phantom.geometry`); ``z = 0`` is near T7.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

VERTEBRA_PITCH_CM = 2.3
T1_Z_CM = 13.8  # centre of T1; T_n is at T1_Z_CM - (n - 1) * pitch

# attenuation at the effective energy (60 keV), 1/cm (reference §1.2)
MU = {
    "air": 0.0,
    "lung": 0.041,  # inflated lung at density 0.20
    "fat": 0.188,
    "water": 0.206,
    "soft": 0.213,  # muscle / solid organs
    "blood": 0.218,
    "cartilage": 0.229,
    "spongiosa": 0.281,
    "cortical": 0.605,
    "granuloma": 0.8,
    "titanium": 3.46,
    "steel": 10.1,
    "platinum": 93.0,
}
LUNG_MU_PER_DENSITY = MU["lung"] / 0.20  # lung attenuation per g/cm^3 of parenchyma


def vertebra_z(level: int) -> float:
    """Height of a thoracic (1-12) or lumbar (13-14 = L1-L2) vertebral body centre; 0 = C7."""
    return T1_Z_CM - (level - 1) * VERTEBRA_PITCH_CM


@dataclass(frozen=True)
class Anatomy:
    """Parameters of one synthetic patient (all lengths in cm; defaults = an average man).

    Variants requested by findings (cardiomegaly, emphysema, scoliosis, ...) are expressed by
    :func:`dataclasses.replace` on these fields, so every rendered anatomy is a frozen, hashable key.
    """

    seed: int = 0
    sex: str = "M"
    scale: float = 1.0  # overall linear size
    half_width: float = 16.5  # half the skin-to-skin width of the thorax at its widest
    half_depth: float = 11.3  # half the AP depth
    fat_cm: float = 2.0  # subcutaneous fat
    breast_cm: float = 0.0  # breast projection (0 = none)
    dome_right_z: float = -6.2  # right dome crest (deep inspiration: T10)
    dome_left_drop: float = 1.5  # left crest below right
    dome_curvature: float = 1.0  # 1 = normal domes; < 0.5 = flat (emphysema)
    lung_density: float = 0.20  # parenchymal density at mid height, g/cm^3
    heart_scale: float = 1.0  # transverse heart size (cardiomegaly > 1.12)
    heart_shift_cm: float = 0.0  # leftward shift of the heart centre
    aorta_unfold: float = 0.0  # 0 normal, 1 tortuous / unfolded
    kyphosis_cm: float = 1.0  # posterior bow of the thoracic spine
    scoliosis_cm: float = 0.0  # lateral bow of the spine (+ = convex to the patient's left)
    mediastinum_scale: float = 1.0  # width of the upper mediastinum
    hila_scale: float = 1.0  # size of the hilar vessels
    elevated_side: str = ""  # "left" / "right": that dome raised by 4 cm
    rotation_pa_deg: float = 0.0
    rotation_ll_deg: float = 0.0
    bone_density: float = 1.0
    vessel_scale: float = 1.0  # calibre of the pulmonary vessels
    apex_z: float = 15.5  # lung apex height

    def key(self) -> tuple:
        """Hashable identity (for caches)."""
        return tuple(asdict(self).values())

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    # --- shape functions -------------------------------------------------------------------
    def body_axes(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Skin half-width and half-depth of the trunk at heights ``z`` (same shape)."""
        knots = [-30, -16, -8, 0, 6, 10, 13, 16, 19, 30]
        width = [0.93, 0.95, 1.0, 0.99, 0.95, 0.89, 0.78, 0.42, 0.36, 0.36]
        depth = [0.98, 0.99, 1.0, 0.98, 0.93, 0.86, 0.76, 0.56, 0.52, 0.52]
        return (np.interp(z, knots, width) * self.half_width,
                np.interp(z, knots, depth) * self.half_depth)

    def cavity_axes(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Half-axes of the inner surface of the rib cage (skin minus fat and chest wall)."""
        width, depth = self.body_axes(z)
        return width - self.fat_cm - 1.5 * self.scale, depth - 0.6 * self.fat_cm - 1.4 * self.scale

    def lung_ellipse(self, side: int, z: np.ndarray) -> tuple[np.ndarray, ...]:
        """Cross-section of one lung at heights ``z``: centre ``(xc, yc)`` and half-axes ``(a, b)``.

        Args:
            side: ``-1`` right lung, ``+1`` left lung.
        """
        cav_w, cav_d = self.cavity_axes(z)
        medial = 0.6 * self.scale
        a = 0.5 * (cav_w - medial)
        xc = side * (medial + a)
        b = 0.97 * cav_d
        yc = np.full_like(np.asarray(z, float), 0.6 * self.scale)
        top = 7.0 * self.scale
        taper = np.sqrt(np.clip(1.0 - ((np.asarray(z) - top) / (self.apex_z - top)) ** 2, 0.0, 1.0))
        taper = np.where(np.asarray(z) > top, taper, 1.0)
        yc = yc + (1.0 - taper) * 2.5  # apices sit posteriorly
        return xc, yc, a * taper ** 0.8, b * taper

    def dome_crest(self, side: int) -> float:
        """Height of a hemidiaphragm's crest."""
        crest = self.dome_right_z - (self.dome_left_drop if side > 0 else 0.0)
        if self.elevated_side == ("left" if side > 0 else "right"):
            crest += 4.0
        return crest

    def dome_z(self, side: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Diaphragm surface height under one lung (paraboloid dome, steeper posteriorly)."""
        xc = self.lung_ellipse(side, np.array(self.dome_crest(side)))[0]
        crest_y = -1.0 * self.scale
        k_x = 0.075 * self.dome_curvature / self.scale
        k_y = np.where(y > crest_y, 0.062, 0.036) * self.dome_curvature / self.scale
        return self.dome_crest(side) - k_x * (x - xc) ** 2 - k_y * (y - crest_y) ** 2

    def heart_frame(self) -> dict[str, Any]:
        """Main heart ellipsoid (centre, radii, yaw/pitch) and the right-atrium ellipsoid."""
        s, k = self.scale, self.heart_scale
        floor = min(self.dome_crest(-1), self.dome_crest(1)) + 0.3
        centre = np.array([2.5 * s + self.heart_shift_cm + 1.1 * (k - 1) * s, -3.4 * s, floor + 3.1 * s])
        return {
            "centre": centre,
            "radii": np.array([6.9 * s * k, 4.6 * s * (0.5 + 0.5 * k), 4.7 * s * (0.6 + 0.4 * k)]),
            "yaw": -18.0,
            "pitch": 36.0,
            "ra_centre": np.array([-2.0 * s - 1.9 * (k - 1) * s, -1.6 * s, floor + 3.4 * s]),
            "ra_radii": np.array([3.0, 3.2, 3.6]) * s * (0.4 + 0.6 * k),
            "floor_z": floor,
        }

    def aorta_path(self) -> tuple[np.ndarray, np.ndarray]:
        """Centreline ``[K, 3]`` and radii ``[K]`` of the ascending aorta, arch and descending aorta."""
        s, u = self.scale, self.aorta_unfold
        points = np.array([[0.6, -2.4, -0.8], [0.1, -2.8, 3.4], [0.3, -2.0, 6.6 + 0.6 * u], [1.9, 0.4, 7.7 + 0.7 * u],
                           [2.8 + 0.9 * u, 2.9, 6.9 + 0.4 * u], [2.5 + 0.6 * u, 4.3, 5.0], [2.2 + 0.9 * u, 4.6, 0.0],
                           [1.7 + 0.7 * u, 4.3, -6.0], [1.0, 3.9, -13.0]]) * s
        radii = np.array([1.5, 1.5, 1.4, 1.35, 1.3, 1.2, 1.15, 1.1, 1.05]) * s * (1 + 0.12 * u)
        return points, radii

    def hilum(self, side: int) -> np.ndarray:
        """Centre of a pulmonary hilum (the left one 1 cm higher)."""
        s = self.scale
        return np.array([side * 4.9 * s, 0.6 * s, (2.6 if side > 0 else 1.6) * s])

    def spine_centre(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of the vertebral-body centreline at heights ``z`` (scoliosis and kyphosis)."""
        z = np.asarray(z, float)
        span = (z - vertebra_z(7)) / 14.0
        bow = np.clip(1.0 - span**2, 0.0, 1.0)
        x = self.scoliosis_cm * bow * np.sign(1.0 - span**2 + 1e-9)
        y = 4.8 * self.scale + self.kyphosis_cm * bow
        return x, y

    def front_y(self) -> float:
        """Most anterior point of the patient (skin or breast)."""
        _, depth = self.body_axes(np.array(-4.0))
        return -float(depth) - self.breast_cm - 0.3

    def side_x(self) -> float:
        """Most lateral point (shoulder soft tissue) for the lateral detector position."""
        width, _ = self.body_axes(np.array(-8.0))
        return float(width) + 0.4


def sample_anatomy(seed: int) -> Anatomy:
    """Draw one patient from the population model (deterministic in ``seed``)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA7A]))
    sex = "F" if rng.random() < 0.5 else "M"
    scale = float(np.clip(rng.normal(1.0, 0.055), 0.86, 1.15)) * (0.93 if sex == "F" else 1.0)
    fat = float(np.clip(rng.gamma(3.0, 0.7), 0.6, 5.5))
    return Anatomy(
        seed=int(seed),
        sex=sex,
        scale=scale,
        half_width=16.3 * scale * float(np.clip(rng.normal(1.0, 0.05), 0.88, 1.12)) + 0.3 * fat,
        half_depth=11.0 * scale * float(np.clip(rng.normal(1.0, 0.07), 0.85, 1.18)) + 0.3 * fat,
        fat_cm=fat,
        breast_cm=float(rng.uniform(2.5, 7.0)) if sex == "F" else 0.0,
        dome_right_z=float(-6.2 * scale + rng.normal(0.0, 1.0)),
        dome_left_drop=float(np.clip(rng.normal(1.5, 0.4), 0.6, 2.4)),
        dome_curvature=float(np.clip(rng.normal(1.0, 0.12), 0.7, 1.3)),
        lung_density=float(np.clip(rng.normal(0.20, 0.02), 0.15, 0.26)),
        heart_scale=float(np.clip(rng.normal(1.0, 0.05), 0.88, 1.1)),
        heart_shift_cm=float(rng.normal(0.0, 0.4)),
        kyphosis_cm=float(np.clip(rng.normal(1.0, 0.4), 0.0, 2.0)),
        rotation_pa_deg=float(rng.normal(0.0, 1.5)),
        rotation_ll_deg=float(rng.normal(0.0, 2.0)),
        bone_density=float(np.clip(rng.normal(1.0, 0.08), 0.8, 1.2)),
        apex_z=float((15.5 + rng.normal(0.0, 0.6)) * scale),
    )


def with_variant(anatomy: Anatomy, **changes: Any) -> Anatomy:
    """A copy of ``anatomy`` with some fields changed (the way findings deform the body)."""
    return replace(anatomy, **changes)
