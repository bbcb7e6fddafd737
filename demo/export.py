"""Download: one zip of the session's results (JSON + overlay PNGs + a Markdown summary).

The zip is written in the session's private temp dir and never names an uploaded file: views are
``file N`` and only PHI-free technical metadata is included.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from demo.ask import NOT_A_DIAGNOSIS
from demo.handlers import metadata_panel
from demo.retrieve import finding_terms
from demo.session import Session, ensure_workdir

ZIP_NAME = "mvcm-session-results.zip"


def results_document(session: Session) -> dict[str, Any]:
    """The session's results as one JSON-ready dict (no uploaded file names)."""
    views = metadata_panel(session.study)
    study = session.study
    for view, label, source in zip(views, session.labels, study.views if study else []):
        view["file"] = session.aliases.get(str(source.record.path), f"file {view['view #']}")
        view["label used"] = label
    return {
        "generated_by": "MVCM teaching demo",
        "disclaimer": NOT_A_DIAGNOSIS,
        "study": {"views": views, "example": session.example},
        "answers": session.answers,
        "retrievals": session.retrievals,
    }


def summary_markdown(document: dict[str, Any]) -> str:
    """A human-readable summary of :func:`results_document`."""
    lines = ["# MVCM session results", "", f"> {NOT_A_DIAGNOSIS}", "", "## Study", ""]
    for view in document["study"]["views"]:
        lines.append(
            f"- view {view['view #']} ({view['file']}): {view['label used']}, "
            f"{view['rows']}×{view['columns']}, {view['modality'] or 'no modality'}"
        )
    lines += ["", "## Questions", ""]
    for number, answer in enumerate(document["answers"], start=1):
        alternatives = ", ".join(f"{name} {p:.0%}" for name, p in answer["alternatives"])
        lines.append(
            f"{number}. **{answer['question']}** → {answer['answer']} "
            f"({answer['probability']:.0%}; top-k: {alternatives})"
        )
    lines += ["", "## Retrieved reports", ""]
    for number, retrieval in enumerate(document["retrievals"], start=1):
        lines.append(f"### Retrieval {number} (k = {retrieval['k']})")
        for report in retrieval["reports"]:
            lines.append(
                f"- #{report['rank']} ({report['score']:.3f}): {finding_terms(report['findings'])}: "
                f"{' '.join(report['text'].split())[:300]}"
            )
    return "\n".join(lines) + "\n"


def build_zip(session: Session, session_hash: str | None = None) -> Path:
    """Write the zip of the session's results in its temp dir and return its path.

    Raises:
        ValueError: nothing to export yet.
    """
    if not session.answers and not session.retrievals:
        raise ValueError("Nothing to download yet: ask a question or retrieve reports first.")
    workdir = ensure_workdir(session, session_hash)
    document = results_document(session)
    path = workdir / ZIP_NAME
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("results.json", json.dumps(document, indent=1))
        archive.writestr("summary.md", summary_markdown(document))
        for name in session.overlay_files:
            if Path(name).is_file():
                archive.write(name, f"overlays/{Path(name).name}")
    return path
