"""Map Open-I MeSH majors (``Head/qualifier/.../qualifier``) to canonical :class:`Finding` records.

An Open-I major such as ``Pleural Effusion/right/small`` is a MeSH heading followed by free
qualifiers: a side, an anatomical region or zone, a lobe, a severity and descriptors
(``tortuous``, ``healed``, ...). :func:`map_mesh_term` reads the heading through :data:`HEAD_RULES`
(the first rule whose required qualifiers are all present wins) and the qualifiers through the small
word tables below. Every major ends in one of three states: ``mapped`` (a :class:`Finding`),
``ignored`` (an annotation that is not a finding, see :data:`IGNORED_HEADS`) or ``unmapped``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mvcm_core.data.findings import CANONICAL_TERMS, Finding

SIDE_WORDS = ("left", "right", "bilateral")
# MeSH qualifier -> Finding.severity ("borderline" heart size is the mildest grade we keep)
SEVERITY_WORDS = {
    "minimal": "minimal",
    "small": "small",
    "mild": "mild",
    "moderate": "moderate",
    "large": "large",
    "severe": "severe",
    "borderline": "minimal",
}
LOBE_WORDS = {"upper lobe": "upper", "middle lobe": "middle", "lower lobe": "lower", "lingula": "lingula"}
# qualifier -> Finding.zone, in priority order when a major names several
ZONE_WORDS = {
    "retrocardiac": "retrocardiac",
    "costophrenic angle": "costophrenic",
    "sulcus": "costophrenic",
    "pleural sinus": "costophrenic",
    "base": "base",
    "apex": "apex",
    "hilum": "hilar",
    "paratracheal": "paratracheal",
    "posterior": "posterior",
    "anterior": "anterior",
}
# headings that are themselves a place
HEAD_ZONES = {"costophrenic angle": "costophrenic", "sulcus": "costophrenic"}
# lobes that fix the side when the major does not say it
LOBE_SIDE = {"middle": "right", "lingula": "left"}
BONE_SUBTYPES = {
    "ribs": "rib",
    "clavicle": "clavicle",
    "sternum": "sternum",
    "humerus": "humerus",
    "thoracic vertebrae": "vertebra",
    "lumbar vertebrae": "vertebra",
    "cervical vertebrae": "vertebra",
    "spine": "vertebra",
}

# Headings that annotate the report rather than describe a finding (reason shown in coverage).
IGNORED_HEADS = {
    "no indexing": "report was not indexed",
    "technical quality of image unsatisfactory": "image-quality flag",
}


def _rule(term: str, subtype: str | None = None, *requires: str) -> tuple[frozenset[str], str, str | None]:
    return frozenset(requires), term, subtype


# heading (lower case) -> rules (required qualifiers, canonical term, subtype); first match wins
HEAD_RULES: dict[str, list[tuple[frozenset[str], str, str | None]]] = {
    "normal": [_rule("normal")],
    "cardiomegaly": [_rule("cardiomegaly")],
    "cardiac shadow": [
        _rule("cardiomegaly", "enlarged cardiac silhouette", "enlarged"),
        _rule("cardiomegaly", "enlarged cardiac silhouette", "borderline"),
    ],
    "pleural effusion": [_rule("pleural effusion")],
    "costophrenic angle": [_rule("pleural effusion", "blunted costophrenic angle", "blunted")],
    "sulcus": [_rule("pleural effusion", "blunted costophrenic angle", "blunted")],
    "pleura": [_rule("pleural effusion", "blunted costophrenic angle", "blunted")],
    "pneumothorax": [_rule("pneumothorax")],
    "hydropneumothorax": [_rule("pneumothorax", "hydropneumothorax")],
    "hemopneumothorax": [_rule("pneumothorax", "hemopneumothorax")],
    "opacity": [_rule("opacity")],
    "airspace disease": [_rule("opacity", "airspace disease")],
    "consolidation": [_rule("opacity", "consolidation")],
    "infiltrate": [_rule("opacity", "infiltrate")],
    "pneumonia": [_rule("opacity", "pneumonia")],
    "density": [_rule("opacity", "density", "lung"), _rule("opacity", "density", "retrocardiac")],
    "pulmonary atelectasis": [_rule("atelectasis")],
    "volume loss": [_rule("atelectasis", "volume loss")],
    "nodule": [_rule("nodule")],
    "mass": [
        _rule("mass", None, "lung"),
        _rule("mass", "mediastinal", "mediastinum"),
        _rule("mass", "mediastinal", "paratracheal"),
        _rule("mass", None, "thorax"),
    ],
    "calcified granuloma": [_rule("calcified granuloma")],
    "granuloma": [_rule("calcified granuloma", "granuloma")],
    "granulomatous disease": [_rule("calcified granuloma", "granulomatous disease")],
    "calcinosis": [
        _rule("aortic tortuosity", "calcification", "aorta"),
        _rule("aortic tortuosity", "calcification", "aorta, thoracic"),
        _rule("calcified granuloma", "calcified lymph node", "lymph nodes"),
        _rule("calcified granuloma", None, "lung"),
        _rule("calcified granuloma", "calcified lymph node", "mediastinum"),
    ],
    "emphysema": [_rule("emphysema")],
    "pulmonary emphysema": [_rule("emphysema")],
    "bullous emphysema": [_rule("emphysema", "bullae")],
    "blister": [_rule("emphysema", "bleb")],
    "pulmonary disease, chronic obstructive": [_rule("emphysema", "copd")],
    "lung, hyperlucent": [_rule("emphysema", "hyperlucency")],
    "lung": [
        _rule("emphysema", "hyperinflation", "hyperdistention"),
        _rule("low lung volumes", None, "hypoinflation"),
        _rule("hilar enlargement", "lymphadenopathy", "hilum", "lymph nodes"),
        _rule("hilar enlargement", None, "hilum", "enlarged"),
        _rule("hilar enlargement", None, "hilum", "prominent"),
        _rule("increased markings", "interstitial", "interstitial"),
    ],
    "diaphragm": [
        _rule("diaphragm elevation", None, "elevated"),
        _rule("emphysema", "flattened diaphragm", "flattened"),
    ],
    "diaphragmatic eventration": [_rule("diaphragm elevation", "eventration")],
    "pulmonary edema": [_rule("edema")],
    "pulmonary congestion": [_rule("edema", "congestion")],
    "hernia, hiatal": [_rule("hiatal hernia")],
    "scoliosis": [_rule("scoliosis")],
    "kyphosis": [_rule("scoliosis", "kyphosis")],
    "fractures, bone": [_rule("fracture")],
    "deformity": [
        _rule("fracture", "vertebral deformity", "thoracic vertebrae"),
        _rule("fracture", "vertebral deformity", "lumbar vertebrae"),
        _rule("fracture", "rib deformity", "ribs"),
        _rule("fracture", "clavicle deformity", "clavicle"),
    ],
    "catheters, indwelling": [_rule("device", "catheter")],
    "surgical instruments": [_rule("device", "surgical clips")],
    "implanted medical device": [_rule("device", "implanted device")],
    "medical device": [_rule("device", "medical device")],
    "tube, inserted": [_rule("device", "tube")],
    "stents": [_rule("device", "stent")],
    "sutures": [_rule("device", "sutures")],
    "spinal fusion": [_rule("device", "spinal fusion hardware")],
    "breast implants": [_rule("device", "breast implant")],
    "thoracic vertebrae": [_rule("degenerative spine", None, "degenerative")],
    "lumbar vertebrae": [_rule("degenerative spine", None, "degenerative")],
    "spine": [_rule("degenerative spine", None, "degenerative")],
    "osteophyte": [
        _rule("degenerative spine", "osteophytes", "thoracic vertebrae"),
        _rule("degenerative spine", "osteophytes", "spine"),
    ],
    "spondylosis": [_rule("degenerative spine", "spondylosis")],
    "hyperostosis, diffuse idiopathic skeletal": [_rule("degenerative spine", "dish")],
    "arthritis": [
        _rule("degenerative spine", "arthritis", "spine"),
        _rule("degenerative spine", "arthritis", "thoracic vertebrae"),
        _rule("degenerative spine", "arthritis", "cervical vertebrae"),
    ],
    "aorta": [
        _rule("aortic tortuosity", "tortuous", "tortuous"),
        _rule("aortic tortuosity", "ectatic", "enlarged"),
        _rule("aortic tortuosity", "ectatic", "prominent"),
    ],
    "atherosclerosis": [
        _rule("aortic tortuosity", "atherosclerosis", "aorta"),
        _rule("aortic tortuosity", "atherosclerosis", "aorta, thoracic"),
    ],
    "aortic aneurysm": [_rule("aortic tortuosity", "aneurysm")],
    "cicatrix": [_rule("scarring")],
    "pulmonary fibrosis": [_rule("scarring", "fibrosis")],
    "fibrosis": [_rule("scarring", "fibrosis")],
    "thickening": [
        _rule("pleural thickening", None, "pleura"),
        _rule("increased markings", "bronchial wall thickening", "bronchovascular"),
        _rule("increased markings", "bronchial wall thickening", "bronchi"),
        _rule("increased markings", "interstitial", "interstitial"),
    ],
    "pulmonary artery": [
        _rule("hilar enlargement", "pulmonary artery", "enlarged"),
        _rule("hilar enlargement", "pulmonary artery", "prominent"),
    ],
    "markings": [
        _rule("increased markings", "interstitial", "interstitial"),
        _rule("increased markings", "bronchovascular", "bronchovascular"),
        _rule("increased markings", None, "lung"),
    ],
    "lung diseases, interstitial": [_rule("increased markings", "interstitial lung disease")],
    "mediastinum": [
        _rule("mediastinal widening", "lymphadenopathy", "lymph nodes"),
        _rule("mediastinal widening", None, "prominent"),
        _rule("mediastinal widening", None, "enlarged"),
    ],
    "bone diseases, metabolic": [_rule("osteopenia")],
    "osteoporosis": [_rule("osteopenia", "osteoporosis")],
}
HEAD_RULES["aorta, thoracic"] = HEAD_RULES["aorta"]


@dataclass(frozen=True)
class MeshMapping:
    """Outcome of mapping one MeSH major.

    Attributes:
        source: the major, verbatim.
        head: its normalised heading (lower case, single spaces).
        status: ``mapped``, ``ignored`` or ``unmapped``.
        finding: the finding when ``mapped``, else None.
        reason: why it was ignored or not mapped (empty when mapped).
    """

    source: str
    head: str
    status: str
    finding: Finding | None = None
    reason: str = ""


def _normalise(word: str) -> str:
    return " ".join(word.lower().split())


def split_mesh_term(mesh: str) -> tuple[str, tuple[str, ...]]:
    """Split ``Head/q1/q2`` into the normalised heading and qualifiers."""
    head, *qualifiers = (_normalise(part) for part in mesh.split("/"))
    return head, tuple(q for q in qualifiers if q)


def _first(qualifiers: Sequence[str], table: dict[str, str]) -> str | None:
    hits = [table[q] for q in table if q in qualifiers]
    return hits[0] if hits else None


def _refine_device(subtype: str | None, qualifiers: Sequence[str], automatic: Sequence[str]) -> str | None:
    """Name the device more precisely from the report's automatic MeSH terms."""
    auto_text = " ".join(automatic)
    if subtype == "implanted device" and "pacemaker" in auto_text:
        return "pacemaker"
    in_chest = not set(qualifiers) & {"abdomen", "neck", "breast", "shoulder", "cervical vertebrae"}
    if subtype == "surgical clips" and in_chest and "sternotomy" in auto_text:
        return "sternotomy wires"
    return subtype


def map_mesh_term(mesh: str, automatic: Sequence[str] = ()) -> MeshMapping:
    """Map one MeSH major to a :class:`Finding`.

    Args:
        mesh: the major, e.g. ``"Opacity/lung/base/left/patchy"``.
        automatic: the report's ``<automatic>`` terms, used only to name devices precisely.

    Returns:
        The mapping; its ``status`` says whether a finding was produced.
    """
    head, qualifiers = split_mesh_term(mesh)
    if head in IGNORED_HEADS:
        return MeshMapping(mesh, head, "ignored", reason=IGNORED_HEADS[head])
    rules = HEAD_RULES.get(head)
    if rules is None:
        return MeshMapping(mesh, head, "unmapped", reason=f"unknown MeSH heading {head!r}")
    match = next(((term, subtype) for requires, term, subtype in rules if requires <= set(qualifiers)), None)
    if match is None:
        return MeshMapping(
            mesh, head, "unmapped", reason=f"no rule for {head!r} with {'/'.join(qualifiers)!r}"
        )
    term, subtype = match
    lobe = _first(qualifiers, LOBE_WORDS)
    side = _first(qualifiers, {w: w for w in SIDE_WORDS}) or LOBE_SIDE.get(lobe or "")
    zone = _first(qualifiers, ZONE_WORDS) or HEAD_ZONES.get(head)
    if lobe in LOBE_SIDE and side != LOBE_SIDE[lobe]:  # e.g. "middle lobe/left": no such lobe, keep the level
        lobe, zone = None, zone or "middle"
    if term == "fracture" and subtype is None:
        subtype = _first(qualifiers, BONE_SUBTYPES)
    if term == "device":
        subtype = _refine_device(subtype, qualifiers, [_normalise(a) for a in automatic])
    finding = Finding(
        term=term,
        side=side,
        zone=zone,
        lobe=lobe,
        severity=_first(qualifiers, SEVERITY_WORDS),
        subtype=subtype,
        source=mesh,
    )
    return MeshMapping(mesh, head, "mapped", finding=finding)


def map_report_mesh(majors: Iterable[str], automatic: Sequence[str] = ()) -> list[MeshMapping]:
    """Map every major of one report (``normal`` alone stays the single finding ``normal``)."""
    mappings = [map_mesh_term(m, automatic) for m in majors if m and m.strip()]
    abnormal = [m for m in mappings if m.finding is not None and m.finding.term != "normal"]
    if abnormal:  # a report indexed both "normal" and a finding is not normal
        mappings = [m for m in mappings if m.finding is None or m.finding.term != "normal"]
    return mappings


def findings_of(mappings: Iterable[MeshMapping]) -> list[Finding]:
    """The distinct findings of a report's mappings, in order."""
    seen: list[Finding] = []
    for mapping in mappings:
        if mapping.finding is not None and mapping.finding not in seen:
            seen.append(mapping.finding)
    return seen


def mesh_coverage(
    reports: Sequence[Any], skipped: dict[str, list[str]] | None = None, top: int = 20
) -> dict[str, Any]:
    """How well a corpus's MeSH majors map to canonical findings.

    Args:
        reports: :class:`~mvcm_core.data.openi.OpenIReport` records.
        skipped: reason -> skipped report names, as recorded while loading.
        top: how many unmapped headings to list.

    Returns:
        Plain-JSON summary: report counts per split, share of reports fully mapped, MeSH occurrences
        by status, reports per canonical term and split, and the most frequent unmapped headings.
    """
    splits = sorted({r.split for r in reports}, key=lambda s: ("train", "val", "test").index(s))
    per_split = {s: [r for r in reports if r.split == s] for s in splits}
    unmapped_heads: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for report in reports:
        for mesh in report.unmapped_mesh:
            head = split_mesh_term(mesh)[0]
            unmapped_heads[head] += 1
            examples.setdefault(head, mesh.strip())
    n_mapped = sum(len(r.mesh_major) - len(r.unmapped_mesh) - len(r.ignored_mesh) for r in reports)
    occurrences = {
        "mapped": n_mapped,
        "ignored": sum(len(r.ignored_mesh) for r in reports),
        "unmapped": sum(len(r.unmapped_mesh) for r in reports),
    }
    return {
        "reports": len(reports),
        "skipped": {reason: len(names) for reason, names in (skipped or {}).items()},
        "splits": {s: len(rs) for s, rs in per_split.items()},
        "fully_mapped": {
            s: sum(r.fully_mapped for r in rs) for s, rs in [("all", reports), *per_split.items()]
        },
        "only_ignored_or_empty": sum(not r.findings and not r.unmapped_mesh for r in reports),
        "with_unmapped": sum(bool(r.unmapped_mesh) for r in reports),
        "mesh_occurrences": occurrences,
        "terms": {
            t: {s: sum(any(f.term == t for f in r.findings) for r in rs) for s, rs in per_split.items()}
            for t in CANONICAL_TERMS
        },
        "top_unmapped": [
            {"heading": examples[h].split("/")[0], "count": n, "example": examples[h]}
            for h, n in unmapped_heads.most_common(top)
        ],
        "distinct_unmapped_headings": len(unmapped_heads),
    }
