"""Pure functions between Gradio's types and ``mvcm_core`` (no gradio import: unit-testable)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mvcm_core.data.dicom import Limits
from mvcm_core.data.study import FileRecord, Study, group_studies, scan_paths
from mvcm_core.data.windowing import to_uint8

STATUS_COLUMNS = ["file", "status", "view", "modality", "size", "photometric", "transfer syntax"]


def status_rows(records: Sequence[FileRecord]) -> list[list[str]]:
    """One PHI-free row per uploaded file (file base name only)."""
    rows = []
    for record in records:
        meta = record.meta
        if meta is None:
            rows.append([record.path.name, record.status, "", "", "", "", ""])
        else:
            rows.append([record.path.name, record.status, meta.view, meta.modality,
                         f"{meta.rows}×{meta.columns}", meta.photometric, meta.transfer_syntax])
    return rows


def gallery_items(study: Study, preset: str | None = None) -> list[tuple[np.ndarray, str]]:
    """(uint8 image, caption) per view, windowed with ``preset`` where the view offers it."""
    items = []
    for number, view in enumerate(study.views, start=1):
        names = {p.name for p in view.image.presets}
        pixels = view.image.render(preset if preset in names else None)
        items.append((to_uint8(pixels), f"view {number}: {view.label}"))
    return items


def load_upload(paths: Sequence[str | Path] | None, limits: Limits | None = None) -> tuple[list[Study], list[list[str]], str]:
    """Uploaded files → (studies, status rows, a one-line summary)."""
    if not paths:
        return [], [], "Upload the DICOM files (or PNG / JPEG images) of one study."
    records = scan_paths([Path(p) for p in paths], limits)
    studies = group_studies(records)
    rejected = sum(not r.ok for r in records)
    if not studies:
        summary = "No usable image: see the reason for each file."
    elif len(studies) > 1:
        summary = f"The upload holds {len(studies)} studies; showing study 1. Pick another below."
    else:
        summary = f"1 study, {len(studies[0].views)} view(s): " + ", ".join(v.label for v in studies[0].views)
    if rejected:
        summary += f" {rejected} file(s) rejected (kept the rest)."
    return studies, status_rows(records), summary
