"""Structured radiology findings: the contract between report parsing, the phantom and VQA.

A report's MeSH majors (e.g. ``Pleural Effusion/right/small``) are parsed by
:mod:`mvcm_core.data.openi` into :class:`Finding` records with a canonical ``term`` from
:data:`CANONICAL_TERMS`; the phantom renders them and the VQA generator asks about them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Canonical finding vocabulary (order is stable: it is used for label vectors).
CANONICAL_TERMS: tuple[str, ...] = (
    "normal",
    "cardiomegaly",
    "pleural effusion",
    "pneumothorax",
    "opacity",  # opacity / airspace disease / consolidation / infiltrate / pneumonia
    "atelectasis",
    "nodule",
    "mass",
    "calcified granuloma",
    "emphysema",  # emphysema / hyperinflation / COPD
    "edema",  # pulmonary edema / congestion
    "hiatal hernia",
    "scoliosis",  # scoliosis / kyphosis / spinal curvature
    "fracture",
    "device",  # catheters, pacemaker, sternotomy wires, surgical clips, tubes
    "degenerative spine",  # spondylosis / osteophytes / degenerative change
    "aortic tortuosity",  # tortuous / ectatic / calcified aorta
    "scarring",  # cicatrix / fibrosis
    "pleural thickening",
    "hilar enlargement",
    "diaphragm elevation",
    "low lung volumes",  # hypoinflation
    "increased markings",  # interstitial / bronchovascular markings, bronchial wall thickening
    "mediastinal widening",  # prominent / enlarged mediastinum or paratracheal stripe
    "osteopenia",  # metabolic bone disease / osteoporosis
)

SIDES = ("left", "right", "bilateral")
SEVERITIES = ("minimal", "small", "mild", "moderate", "large", "severe")


@dataclass(frozen=True)
class Finding:
    """One structured finding of a report.

    Attributes:
        term: canonical term, one of :data:`CANONICAL_TERMS`.
        side: ``left``, ``right``, ``bilateral`` or None when unspecified / midline.
        zone: vertical or anatomical zone (``upper``, ``middle``, ``lower``, ``base``, ``apex``,
            ``hilar``, ``retrocardiac``, ``posterior``, ``lingula``, ...) or None.
        lobe: ``upper``, ``middle``, ``lower``, ``lingula`` or None.
        severity: one of :data:`SEVERITIES` or None.
        subtype: finer kind within the term (e.g. ``pacemaker`` for ``device``,
            ``consolidation`` for ``opacity``, ``rib`` for ``fracture``) or None.
        source: the original MeSH string it was parsed from (kept verbatim).
    """

    term: str
    side: str | None = None
    zone: str | None = None
    lobe: str | None = None
    severity: str | None = None
    subtype: str | None = None
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.term not in CANONICAL_TERMS:
            raise ValueError(f"unknown finding term {self.term!r}")
        if self.side is not None and self.side not in SIDES:
            raise ValueError(f"side must be one of {SIDES} or None, got {self.side!r}")
        if self.severity is not None and self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES} or None, got {self.severity!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        names = {"term", "side", "zone", "lobe", "severity", "subtype", "source"}
        return cls(**{k: v for k, v in data.items() if k in names})


SIDE_SLOTS = (None, "left", "right", "bilateral")


def fine_label_vector(findings: list[Finding] | list[dict[str, Any]]) -> list[int]:
    """Multi-hot over (term, side): ``len(CANONICAL_TERMS) * 4`` entries, index ``term * 4 + side``.

    Finer than term-only labels: a left and a right effusion differ. ``normal`` is index 0.
    """
    vector = [0] * (len(CANONICAL_TERMS) * len(SIDE_SLOTS))
    for finding in findings:
        item = finding if isinstance(finding, Finding) else Finding.from_dict(finding)
        vector[CANONICAL_TERMS.index(item.term) * len(SIDE_SLOTS) + SIDE_SLOTS.index(item.side)] = 1
    return vector
