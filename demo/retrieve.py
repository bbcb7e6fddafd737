"""Report retrieval handlers: ranked similar reports, findings and impression first, full text on select.

Index records are reports verbatim; ``FINDINGS:`` / ``IMPRESSION:`` headers are split out when the
text has them (Open-I style text often has neither: then the whole text is the findings section).
Thumbnails are shown only when a record names a ``thumbnail`` file that exists.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from demo.ask import NOT_A_DIAGNOSIS, ood_banner
from demo.session import Session

SECTIONS = ["impression", "findings", "full text"]
RESULT_COLUMNS = ["rank", "score", "structured findings", "text"]
MAX_K = 20
_HEADER = re.compile(
    r"^\s*(FINDINGS|IMPRESSION|INDICATION|COMPARISON|HISTORY|TECHNIQUE)\s*:\s*", re.IGNORECASE | re.MULTILINE
)
_SNIPPET = 220


def split_sections(text: str) -> dict[str, str]:
    """``{"findings", "impression", ...}`` of a report; headerless text is all findings."""
    parts = _HEADER.split(text or "")
    if len(parts) == 1:
        return {"findings": (text or "").strip(), "impression": ""}
    sections = {"findings": "", "impression": "", "preamble": parts[0].strip()}
    for name, body in zip(parts[1::2], parts[2::2]):
        sections[name.lower()] = body.strip()
    return sections


def finding_terms(findings: Sequence[dict[str, Any]]) -> str:
    """``left pleural effusion, cardiomegaly`` from structured findings."""
    words = []
    for finding in findings:
        side = finding.get("side")
        words.append(f"{side} {finding.get('term', '')}" if side else str(finding.get("term", "")))
    return ", ".join(w for w in words if w.strip()) or "none listed"


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SNIPPET else text[: _SNIPPET - 1].rstrip() + "…"


def section_text(report: dict[str, Any], section: str) -> str:
    """The chosen section of a report, trimmed for the table."""
    parts = split_sections(report["text"])
    if section == "impression":
        return _snippet(parts["impression"]) if parts["impression"] else "(no separate impression)"
    if section == "findings":
        return _snippet(parts["findings"]) or "(no findings section)"
    return _snippet(report["text"])


def result_rows(reports: Sequence[dict[str, Any]], section: str = "impression") -> list[list[Any]]:
    """Table rows: rank, score, structured findings, the chosen section."""
    return [
        [r["rank"], round(float(r["score"]), 4), finding_terms(r["findings"]), section_text(r, section)]
        for r in reports
    ]


def _cosine(report: dict[str, Any]) -> str:
    """", cosine 0.412" when the ranking score is not the plain cosine (hub and findings terms added)."""
    cosine = (report.get("extra") or {}).get("cosine")
    if cosine is None or abs(float(cosine) - float(report["score"])) < 5e-5:
        return ""
    return f", cosine {float(cosine):.3f}"


def report_markdown(report: dict[str, Any] | None) -> str:
    """One retrieved report in full: impression first, then findings, then attribution."""
    if not report:
        return ""
    parts = split_sections(report["text"])
    lines = [
        f"### Report {report['rank']} (score {float(report['score']):.3f}{_cosine(report)})",
        f"**Structured findings:** {finding_terms(report['findings'])}",
    ]
    if parts.get("impression"):
        lines.append(f"**Impression:** {parts['impression']}")
    if parts.get("findings"):
        lines.append(f"**Findings:** {parts['findings']}")
    for name, body in parts.items():
        if name not in ("findings", "impression") and body:
            lines.append(f"**{name.capitalize()}:** {body}")
    if report.get("attribution"):
        lines.append(f"<sub>{report['attribution']}</sub>")
    lines.append(f"_Retrieved, not written, for this study. {NOT_A_DIAGNOSIS}_")
    return "\n\n".join(lines)


def thumbnails(reports: Sequence[dict[str, Any]], base: Path | None) -> list[tuple[np.ndarray, str]]:
    """Images of retrieved studies whose record has an existing ``thumbnail`` file (usually none)."""
    out = []
    for report in reports:
        name = (report.get("extra") or {}).get("thumbnail")
        if not name:
            continue
        path = Path(name) if Path(name).is_absolute() or base is None else base / name
        if path.is_file():
            with Image.open(path) as image:
                image.thumbnail((256, 256))
                out.append((np.asarray(image.convert("L")), f"report {report['rank']}"))
    return out


@dataclass
class RetrieveResult:
    """What the retrieval tab shows (plain values)."""

    rows: list[list[Any]]
    banner: str
    report: str
    thumbnails: list[tuple[np.ndarray, str]]
    result: dict[str, Any]


def retrieval_dict(raw: dict[str, Any], k: int) -> dict[str, Any]:
    """JSON-ready form of ``Predictor.retrieve`` output."""
    return {
        "k": int(k),
        "in_distribution": raw["in_distribution"],
        "ood_score": raw["ood_score"],
        "reports": [r.to_dict() for r in raw["reports"]],
        "disclaimer": NOT_A_DIAGNOSIS,
    }


def retrieve(session: Session, predictor: Any, k: int = 5, section: str = "impression") -> RetrieveResult:
    """Retrieve the ``k`` most similar reports for the selected study (recorded in the session).

    Raises:
        ValueError: no model, no index, or no study (one line).
    """
    if predictor is None:
        raise ValueError("No model is loaded (viewer-only mode): reports cannot be retrieved.")
    k = max(1, min(int(k), MAX_K))
    result = retrieval_dict(predictor.retrieve(session.model_views(), k=k), k)
    session.retrievals.append(result)
    folder = getattr(predictor, "folder", None)
    return RetrieveResult(
        result_rows(result["reports"], section),
        ood_banner(result["in_distribution"], result["ood_score"]),
        report_markdown(result["reports"][0] if result["reports"] else None),
        thumbnails(result["reports"], Path(folder) / "index" if folder else None),
        result,
    )


def latest_rows(session: Session, section: str) -> list[list[Any]]:
    """The latest retrieval's rows with another section (no model call)."""
    return result_rows(session.retrievals[-1]["reports"], section) if session.retrievals else []


def select_report(session: Session, row: int | None) -> str:
    """The full text of row ``row`` of the latest retrieval."""
    if not session.retrievals or row is None:
        return ""
    reports = session.retrievals[-1]["reports"]
    return report_markdown(reports[row]) if 0 <= row < len(reports) else ""
