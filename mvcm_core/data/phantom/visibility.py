"""Which view shows which finding (reference §3, "Which view answers what"), as data.

Rules are per term with severity / zone refinements. ``PA`` resolves laterality for every
lateralised finding; the lateral is needed for small (posterior-recess) effusions, retrocardiac
opacities, hiatal hernia, degenerative spine and anterior-posterior localisation.
"""

from __future__ import annotations

import math

from mvcm_core.data.findings import CANONICAL_TERMS, Finding

BOTH = ("PA", "LL")
# term -> (views that show it, note)
VISIBILITY: dict[str, tuple[tuple[str, ...], str]] = {
    "normal": (BOTH, "both views are needed to call a study normal"),
    "cardiomegaly": (BOTH, "CTR on PA; chamber enlargement and retrosternal / retrocardiac filling on LL"),
    "pleural effusion": (BOTH, "moderate / large: both; small (< ~200 mL, posterior recess only): LL only"),
    "pneumothorax": (("PA",), "apical pleural line without markings beyond it; usually invisible on LL"),
    "opacity": (BOTH, "lobar: both (silhouette sign on PA, anterior / posterior on LL); retrocardiac: LL"),
    "atelectasis": (BOTH, "plate-like bands are seen edge-on in both views"),
    "nodule": (("PA",), "1-2 cm solid nodules: PA; LL only sometimes (depth)"),
    "mass": (BOTH, "> 3 cm: both"),
    "calcified granuloma": (("PA",), "3-7 mm dense dots: PA; LL rarely"),
    "emphysema": (BOTH, "flat low domes and hyperlucency on PA; barrel chest, flat domes on LL"),
    "edema": (BOTH, "perihilar haze, Kerley B lines and cephalisation best on PA"),
    "hiatal hernia": (BOTH, "retrocardiac air-fluid level; best on LL"),
    "scoliosis": (("PA",), "lateral curvature is a frontal-plane sign"),
    "fracture": (("PA",), "rib fractures: PA; ribs superimpose on LL"),
    "device": (BOTH, "side and course on PA, depth and tip on LL"),
    "degenerative spine": (("LL",), "anterior end-plate osteophytes are profiled on LL"),
    "aortic tortuosity": (BOTH, "knob and descending contour on PA, arch on LL"),
    "scarring": (("PA",), "linear upper-zone opacities"),
    "pleural thickening": (("PA",), "apical caps"),
    "hilar enlargement": (BOTH, "lobulated hila on both views"),
    "diaphragm elevation": (BOTH, "one dome higher on both views"),
    "low lung volumes": (BOTH, "high domes, crowded bases"),
    "increased markings": (("PA",), "denser vessel and interstitial markings"),
    "mediastinal widening": (("PA",), "upper mediastinal width is a frontal measurement"),
    "osteopenia": (BOTH, "thin, faint bones"),
}
LATERALISED = {"pleural effusion", "pneumothorax", "opacity", "atelectasis", "nodule", "mass",
               "calcified granuloma", "fracture", "diaphragm elevation", "scarring", "pleural thickening",
               "scoliosis"}


# The size of the detail that shows a finding (mm), for findings whose sign is finer than the body of
# the finding itself (reference §3 "min visible"): a detail is resolved when it spans >= 2 pixels of
# the 43 cm field (Nyquist), e.g. >= 6.7 mm at 128 px. Findings not listed are >= 1 cm (or diffuse).
FIELD_MM = 430.0
DETAIL_MM: dict[str, float] = {
    "calcified granuloma": 4.0,   # 3-5 mm dense dots
    "degenerative spine": 3.0,    # anterior end-plate osteophytes
    "fracture": 2.0,              # 1-3 mm cortical gap or step-off
    "scarring": 2.0,              # thin linear upper-zone bands
    "osteopenia": 1.0,            # cortical thinning (~1 mm cortex)
}


def min_image_size(term: str) -> int:
    """Smallest square image side (pixels over the 43 cm field) at which ``term``'s sign is resolved."""
    detail = DETAIL_MM.get(term)
    return 0 if detail is None else math.ceil(2 * FIELD_MM / detail)


def resolved_at(term: str, image_size: int | None) -> bool:
    """Whether ``term`` can be seen at all in an image of side ``image_size`` (None: full resolution)."""
    return image_size is None or image_size >= min_image_size(term)


def visible_views(finding: Finding) -> list[str]:
    """Views in which ``finding`` is visible in the phantom (empty for unsupported terms)."""
    views, _ = VISIBILITY.get(finding.term, ((), ""))
    if finding.term == "pleural effusion" and finding.severity in ("minimal", "small"):
        return ["LL"]
    if finding.term == "opacity" and finding.zone == "retrocardiac":
        return ["LL"]
    return list(views)


def laterality_view(finding: Finding) -> str | None:
    """The view that resolves left / right for a lateralised finding (always the frontal one)."""
    return "PA" if finding.term in LATERALISED else None


def visibility_table_markdown() -> str:
    """The table in ``docs/phantom.md``: term, views, laterality, note."""
    lines = ["| finding | PA | LL | laterality from | note |", "|---|---|---|---|---|"]
    for term in CANONICAL_TERMS:
        views, note = VISIBILITY[term]
        lines.append(f"| {term} | {'yes' if 'PA' in views else '-'} | {'yes' if 'LL' in views else '-'} | "
                     f"{'PA' if term in LATERALISED else 'n/a'} | {note} |")
    return "\n".join(lines)
