"""Offline fallback for report-driven rendering: random structured findings and a templated report.

Used when the Open-I reports are not available (or with ``--source random``). Roughly 40 % of
studies are normal; the others carry 1-3 findings drawn with weights close to their Open-I frequency,
with side, lobe / zone, severity and subtype where they matter. The report text is a short,
template-built FINDINGS / IMPRESSION pair, clearly synthetic.
"""

from __future__ import annotations

import numpy as np

from mvcm_core.data.findings import Finding

# term -> relative weight among abnormal findings
TERM_WEIGHTS = {
    "cardiomegaly": 10, "pleural effusion": 8, "opacity": 10, "atelectasis": 7, "nodule": 6,
    "calcified granuloma": 9, "emphysema": 5, "edema": 3, "scoliosis": 5, "device": 6, "fracture": 3,
    "degenerative spine": 6, "aortic tortuosity": 5, "pneumothorax": 2, "hiatal hernia": 2, "mass": 1,
    "scarring": 3, "pleural thickening": 2, "hilar enlargement": 2, "diaphragm elevation": 2,
    "low lung volumes": 3, "increased markings": 3, "mediastinal widening": 1, "osteopenia": 2,
}
_LATERAL = {"pleural effusion", "pneumothorax", "opacity", "atelectasis", "nodule", "mass", "calcified granuloma",
            "fracture", "scarring", "pleural thickening", "diaphragm elevation"}
_NORMAL_TEXT = ("The heart is normal in size. The mediastinum is unremarkable. The lungs are clear. "
                "There is no pleural effusion or pneumothorax. No acute osseous abnormality.")


def random_finding(term: str, rng: np.random.Generator) -> Finding:
    """One finding of ``term`` with plausible attributes."""
    side = zone = lobe = severity = subtype = None
    if term in _LATERAL:
        side = str(rng.choice(["left", "right", "bilateral"], p=[0.42, 0.42, 0.16]))
        if term in ("fracture", "diaphragm elevation", "pneumothorax") and side == "bilateral":
            side = "right"
    if term in ("opacity", "nodule", "mass", "scarring"):
        lobe = str(rng.choice(["upper", "middle", "lower"], p=[0.3, 0.2, 0.5]))
        if lobe == "middle" and side == "left":
            lobe = "lingula"
        if side == "bilateral" and lobe in ("middle", "lingula"):
            lobe = "lower"
    if term in ("pleural effusion", "cardiomegaly", "opacity", "atelectasis", "emphysema", "edema", "scoliosis",
                "pneumothorax"):
        severity = str(rng.choice(["small", "mild", "moderate", "large"], p=[0.35, 0.3, 0.25, 0.1]))
    if term == "device":
        subtype = str(rng.choice(["pacemaker", "sternotomy wires", "catheter", "surgical clips"]))
    if term == "opacity":
        subtype = str(rng.choice(["consolidation", "airspace disease", "infiltrate"]))
    if term == "fracture":
        subtype = str(rng.choice(["rib", "healed rib"]))
    if term == "atelectasis":
        zone = "base"
    return Finding(term, side=side, zone=zone, lobe=lobe, severity=severity, subtype=subtype,
                   source=f"synthetic/{term}")


def sample_findings(rng: np.random.Generator, normal_rate: float = 0.4) -> list[Finding]:
    """A random list of findings (``[Finding("normal")]`` for a normal study)."""
    if rng.random() < normal_rate:
        return [Finding("normal", source="synthetic/normal")]
    terms = list(TERM_WEIGHTS)
    weights = np.array([TERM_WEIGHTS[t] for t in terms], float)
    count = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
    chosen = rng.choice(terms, size=count, replace=False, p=weights / weights.sum())
    return [random_finding(str(t), rng) for t in chosen]


def describe(finding: Finding) -> str:
    """One templated sentence for a finding."""
    words = [finding.severity, finding.side, finding.lobe and f"{finding.lobe} lobe", finding.zone, finding.subtype]
    detail = " ".join(w for w in words if w)
    return f"{finding.term.capitalize()}" + (f" ({detail})" if detail else "") + "."


def report_text(findings: list[Finding]) -> tuple[str, str]:
    """``(findings_text, impression)`` of a synthetic report."""
    abnormal = [f for f in findings if f.term != "normal"]
    if not abnormal:
        return _NORMAL_TEXT, "No acute cardiopulmonary abnormality."
    body = " ".join(describe(f) for f in abnormal)
    impression = "; ".join(f.term for f in abnormal).capitalize() + "."
    return f"SYNTHETIC REPORT. {body}", impression
