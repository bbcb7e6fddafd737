"""Ingestion and display handlers: uploaded files → session study → gallery, labels, metadata.

Pure functions between Gradio's plain values and ``mvcm_core`` (no gradio import: unit-testable).
Windowing and inversion change the *display* only; the model always receives each view in the
file's own window (the training preprocessing), with the user's corrected view labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from demo.session import AppLimits, Session
from mvcm_core.data.dicom import DicomRejected, read_header, sniff_kind
from mvcm_core.data.dicom_meta import VIEWS
from mvcm_core.data.imageops import resize_longest
from mvcm_core.data.study import FileRecord, Study, group_studies, scan_paths
from mvcm_core.data.windowing import PERCENTILE_PRESETS, to_uint8

STATUS_COLUMNS = ["file", "status", "view", "modality", "size"]
VIEW_CHOICES: list[str] = list(VIEWS)
PRESETS: list[str] = ["file", *PERCENTILE_PRESETS]  # file = the file's own window
MAX_FILES = AppLimits().max_files  # label dropdowns in the layout; the file limit itself is configurable
PREVIEW_MAX_SIDE = 1024
META_FIELDS = (
    "sop_class",
    "modality",
    "view",
    "view_source",
    "rows",
    "columns",
    "frames",
    "bits_stored",
    "photometric",
    "transfer_syntax",
    "body_part",
    "image_laterality",
    "presentation_intent",
    "pixel_spacing_mm",
    "window_presets",
    "warnings",
)
Progress = Callable[..., Any]


@dataclass
class StudyPanel:
    """Everything the study column shows, as plain values.

    Attributes:
        gallery: (uint8 image, caption) per view.
        rows: one status row per uploaded file.
        summary: one Markdown paragraph.
        choices: study picker entries (shown when there is more than one study).
        choice: the selected entry.
        labels: the selected study's view labels (one per view, at most :data:`MAX_FILES`).
        meta: PHI-free technical metadata per view.
    """

    gallery: list[tuple[np.ndarray, str]]
    rows: list[list[str]]
    summary: str
    choices: list[str]
    choice: str | None
    labels: list[str]
    meta: list[dict[str, Any]]


def status_rows(records: Sequence[FileRecord], aliases: dict[str, str] | None = None) -> list[list[str]]:
    """One PHI-free row per uploaded file (base name, or its alias such as ``file 2``)."""
    rows = []
    for record in records:
        name = (aliases or {}).get(str(record.path), record.path.name)
        meta = record.meta
        if meta is None:
            rows.append([name, record.status, "", "", ""])
        else:
            rows.append([name, record.status, meta.view, meta.modality, f"{meta.rows}×{meta.columns}"])
    return rows


def render_view(
    view: Any, preset: str | None = None, invert: bool = False, max_side: int | None = PREVIEW_MAX_SIDE
) -> np.ndarray:
    """A view as a uint8 display image: window ``preset`` (``file`` = its own), inverted on request."""
    names = {p.name for p in view.image.presets}
    if preset in PERCENTILE_PRESETS and preset in names:
        pixels = view.image.render(preset)
    else:
        pixels = view.image.display
    if max_side and max(pixels.shape) > max_side:
        pixels = resize_longest(pixels, max_side)
    if invert:
        pixels = 1.0 - pixels
    return to_uint8(pixels)


def gallery_items(
    study: Study, preset: str | None = None, invert: bool = False, labels: Sequence[str] | None = None
) -> list[tuple[np.ndarray, str]]:
    """(uint8 image, caption) per view; captions carry the (corrected) label."""
    items = []
    for number, view in enumerate(study.views, start=1):
        label = labels[number - 1] if labels and len(labels) >= number else view.label
        note = " (corrected)" if label != view.label else ""
        items.append((render_view(view, preset, invert), f"view {number}: {label}{note}"))
    return items


def load_upload(
    paths: Sequence[str | Path] | None, limits: AppLimits | None = None
) -> tuple[list[Study], list[list[str]], str]:
    """Uploaded files → (studies, status rows, a one-line summary)."""
    studies, records = read_upload(paths, limits)
    return studies, status_rows(records), upload_summary(studies, records)


def read_upload(
    paths: Sequence[str | Path] | None, limits: AppLimits | None = None
) -> tuple[list[Study], list[FileRecord]]:
    """Read an upload within ``limits`` (files over a bound are rejected with a reason) and group them.

    At most ``max_files`` files are read; each must be at most ``max_file_mb`` and ``max_pixels``;
    files whose pixels would take the upload past ``max_total_pixels`` are refused before decoding.
    """
    limits = limits or AppLimits()
    paths = [Path(p) for p in (paths or [])]
    kept, refused = _within_total_pixels(paths[: limits.max_files], limits)
    records = scan_paths(kept, limits.reader) if kept else []
    records += refused
    records += [
        FileRecord(p, "unknown", f"more than {limits.max_files} files in one upload")
        for p in paths[limits.max_files :]
    ]
    order = {str(p): i for i, p in enumerate(paths)}
    records.sort(key=lambda r: order.get(str(r.path), len(order)))
    return group_studies(records), records


def declared_pixels(path: Path) -> int:
    """Rows × Columns a file declares in its header (0 when unknown: the reader will judge it)."""
    kind = sniff_kind(path)
    try:
        if kind == "dicom":
            ds = read_header(path)
            return int(ds.Rows) * int(ds.Columns)
        if kind in ("png", "jpeg"):
            from PIL import Image

            with Image.open(path) as image:
                return image.width * image.height
    except (DicomRejected, OSError, ValueError, TypeError, AttributeError):
        return 0
    return 0


def _within_total_pixels(paths: Sequence[Path], limits: AppLimits) -> tuple[list[Path], list[FileRecord]]:
    """Split files into those that fit the upload's pixel budget and those refused for it."""
    kept: list[Path] = []
    refused: list[FileRecord] = []
    total = 0
    for path in paths:
        pixels = declared_pixels(path) if path.is_file() else 0
        if pixels and total + pixels > limits.max_total_pixels:
            reason = (f"the upload's images would exceed {limits.max_total_pixels:,} pixels in total "
                      "(MVCM_MAX_TOTAL_PIXELS)")
            refused.append(FileRecord(path, sniff_kind(path), reason))
            continue
        total += pixels
        kept.append(path)
    return kept, refused


def upload_summary(studies: Sequence[Study], records: Sequence[FileRecord], selected: int = 0) -> str:
    """One Markdown line: how many studies and views, and how many files were rejected."""
    if not records:
        return "Upload the DICOM files (or PNG / JPEG images) of one study."
    rejected = sum(not r.ok for r in records)
    if not studies:
        summary = "No usable image: see the reason for each file."
    elif len(studies) > 1:
        summary = (
            f"The upload holds {len(studies)} studies; showing study {selected + 1}. "
            "Pick another with the study selector."
        )
    else:
        summary = f"1 study, {len(studies[0].views)} view(s): " + ", ".join(v.label for v in studies[0].views)
    if rejected:
        summary += f" {rejected} file(s) rejected (kept the rest)."
    return summary


def study_choices(studies: Sequence[Study]) -> list[str]:
    """Picker entries: ``study 1 (2 views: PA, LATERAL)``."""
    return [
        f"study {i} ({len(s.views)} view(s): {', '.join(v.label for v in s.views)})"
        for i, s in enumerate(studies, start=1)
    ]


def metadata_panel(study: Study | None) -> list[dict[str, Any]]:
    """PHI-free technical metadata per view (an allow-list of :class:`DicomMeta` fields)."""
    if study is None:
        return []
    panel = []
    for number, view in enumerate(study.views, start=1):
        meta = view.image.meta.to_dict()
        panel.append(
            {
                "view #": number,
                "file": Path(meta["file_name"]).name,
                **{key: meta[key] for key in META_FIELDS},
            }
        )
    return panel


def ingest(
    session: Session,
    paths: Sequence[str | Path] | None,
    example_of: Callable[[Sequence[Path]], str | None] | None = None,
    progress: Progress | None = None,
    limits: AppLimits | None = None,
) -> Session:
    """Read an upload into the session within ``limits`` (results of the previous study are dropped)."""
    if progress is not None:
        progress(0.1, desc="Reading and decoding the files")
    studies, records = read_upload(paths, limits)
    session.reset_results()
    session.studies, session.records, session.selected = studies, records, 0
    session.aliases = {str(r.path): f"file {i}" for i, r in enumerate(records, start=1)}
    session.labels = [v.label for v in studies[0].views] if studies else []
    usable = [r.path for r in records if r.ok]
    session.example = example_of(usable) if example_of and usable and len(studies) == 1 else None
    return session


def select_study(session: Session, choice: str | None) -> Session:
    """Switch to the study named by a picker entry (results are dropped, labels reset)."""
    choices = study_choices(session.studies)
    if choice in choices and choices.index(choice) != session.selected:
        session.selected = choices.index(choice)
        session.labels = [v.label for v in session.study.views]
        session.reset_results()
    return session


def set_labels(session: Session, labels: Sequence[str | None]) -> Session:
    """Correct the view labels of the selected study (unknown values become ``unknown``)."""
    study = session.study
    if study is None:
        return session
    fixed = [label if label in VIEW_CHOICES else "unknown" for label in list(labels)[: len(study.views)]]
    fixed += [v.label for v in study.views[len(fixed) :]]
    session.labels = fixed  # earlier answers keep the labels they were asked with (``view_labels``)
    return session


def set_display(session: Session, preset: str | None, invert: bool) -> Session:
    """Remember the display window and inversion."""
    session.preset = preset if preset in PRESETS else "file"
    session.invert = bool(invert)
    return session


def study_panel(session: Session) -> StudyPanel:
    """The study column's content for the session's selected study."""
    study = session.study
    choices = study_choices(session.studies)
    return StudyPanel(
        gallery=gallery_items(study, session.preset, session.invert, session.labels) if study else [],
        rows=status_rows(session.records),
        summary=upload_summary(session.studies, session.records, session.selected),
        choices=choices,
        choice=choices[session.selected] if study else None,
        labels=list(session.labels[:MAX_FILES]),
        meta=metadata_panel(study),
    )
