"""MIMIC-CXR-JPG 2.0.0, study level: every view of a study grouped with its sectioned report.

Layout (``root`` is ``physionet.org/files/mimic-cxr-jpg/2.0.0/``; ``.csv`` or ``.csv.gz``)::

    root/mimic-cxr-2.0.0-metadata.csv.gz   dicom_id, subject_id, study_id, ViewPosition, StudyDate, ...
    root/mimic-cxr-2.0.0-split.csv.gz      dicom_id, study_id, subject_id, split (train/validate/test)
    root/mimic-cxr-2.0.0-chexpert.csv.gz   subject_id, study_id, 14 labels (1.0 / 0.0 / -1.0 / blank)
    root/files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg
    root/mimic_cxr_sectioned.csv           study (s50414267), impression, findings, last_paragraph, comparison

The sectioned CSV is the output of the official ``create_section_files.py`` run on
MIMIC-CXR's ``reports/files``; pass ``sectioned_csv=`` if it lives elsewhere. ``report`` is
findings then impression; when both are empty, ``last_paragraph`` is used (recorded in
``extra["report_source"]``), and a study with no text at all is filtered out.
``ViewPosition`` PA / AP / LATERAL / LL map to PA / AP / LATERAL, anything else (``AP AXIAL``,
``LAO``, blank, ...) to ``unknown``; the raw value stays in ``extra["view_positions"]``.
Splits: train / validate -> val / test (official, by patient).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from pathlib import Path
from typing import Any

from ._common import (
    MALFORMED,
    MISSING_IMAGE,
    ReaderError,
    ReadStats,
    check_malformed_fraction,
    first_existing,
    image_present,
    read_csv_rows,
    require_file,
    resolve_split,
)
from .records import VIEWS, StudyRecord, normalize_view

NAME = "mimic-cxr"
PREFIX = "mimic-cxr-2.0.0"
SPLIT_NAMES = {"train": "train", "validate": "val", "test": "test"}
CHEXPERT_LABELS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)
SECTION_COLUMNS = ("study", "impression", "findings", "last_paragraph", "comparison")
_VIEW_ORDER = {view: rank for rank, view in enumerate(VIEWS)}


def table_path(root: Path, kind: str) -> Path:
    """``mimic-cxr-2.0.0-<kind>.csv.gz`` or the uncompressed ``.csv``."""
    found = first_existing(root / f"{PREFIX}-{kind}{ext}" for ext in (".csv.gz", ".csv"))
    if found is None:
        raise ReaderError(f"missing MIMIC-CXR {kind} table: {root / f'{PREFIX}-{kind}.csv.gz'}")
    return found


def image_path(root: Path, subject_id: str, study_id: str, dicom_id: str) -> Path:
    """``files/p10/p10000032/s50414267/<dicom_id>.jpg``."""
    return root / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}" / f"{dicom_id}.jpg"


def load_splits(path: Path) -> dict[str, str]:
    """dicom_id -> our split name; rows with an unknown split are ignored (their images then drop)."""
    rows = read_csv_rows(path, ("dicom_id", "split"))
    return {r["dicom_id"]: SPLIT_NAMES[r["split"]] for r in rows if r.get("split") in SPLIT_NAMES}


def _label_value(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def load_chexpert(path: Path) -> dict[str, dict[str, float | None]]:
    """study_id -> CheXpert labels (1.0 positive, 0.0 negative, -1.0 uncertain, None not mentioned)."""
    rows = read_csv_rows(path, ("study_id", *CHEXPERT_LABELS))
    return {r["study_id"]: {name: _label_value(r.get(name)) for name in CHEXPERT_LABELS} for r in rows}


def load_sections(path: Path) -> dict[str, dict[str, str]]:
    """study_id (without the ``s``) -> non-empty sections of its report."""
    sections: dict[str, dict[str, str]] = {}
    for row in read_csv_rows(path, SECTION_COLUMNS):
        study = (row.get("study") or "").strip().removeprefix("s")
        parts = {key: (row.get(key) or "").strip() for key in SECTION_COLUMNS[1:]}
        sections[study] = {key: text for key, text in parts.items() if text}
    return sections


def compose_report(sections: dict[str, str]) -> tuple[str, str]:
    """``(report, source)``: findings then impression, else the last paragraph, else empty."""
    main = [sections[key] for key in ("findings", "impression") if sections.get(key)]
    if main:
        return "\n".join(main), "findings+impression"
    if sections.get("last_paragraph"):
        return sections["last_paragraph"], "last_paragraph"
    return "", ""


def group_images(
    root: Path,
    metadata: Path,
    splits: dict[str, str],
    wanted_splits: Collection[str],
    keep_views: Collection[str] | None,
    check_images: bool,
    stats: ReadStats,
) -> dict[str, list[dict[str, Any]]]:
    """study_id -> its kept images (dicom id, path, view, raw view, subject, split, date)."""
    studies: dict[str, list[dict[str, Any]]] = defaultdict(list)
    before, rows = stats.skipped[MALFORMED], 0
    for index, row in enumerate(
        read_csv_rows(metadata, ("dicom_id", "subject_id", "study_id", "ViewPosition"))
    ):
        rows = index + 1
        where = f"{metadata.name}[{index}]"
        dicom, subject, study = (row.get(k, "").strip() for k in ("dicom_id", "subject_id", "study_id"))
        if not dicom or not subject.isdigit() or not study.isdigit():
            stats.skip(MALFORMED, where)
            continue
        if dicom not in splits:
            stats.skip("not in split table", f"{where} {dicom}")
            continue
        if splits[dicom] not in wanted_splits:
            continue
        view = normalize_view(row.get("ViewPosition"))
        if keep_views is not None and view not in keep_views:
            stats.filter(f"view {view}")
            continue
        path = image_path(root, subject, study, dicom)
        if not image_present(path, check_images):
            stats.skip(MISSING_IMAGE, f"{where} {path.name}")
            continue
        studies[study].append(
            {
                "dicom_id": dicom,
                "path": path,
                "view": view,
                "raw_view": row.get("ViewPosition", ""),
                "subject_id": subject,
                "split": splits[dicom],
                "date": row.get("StudyDate", ""),
            }
        )
    check_malformed_fraction(stats, metadata, before, rows)
    return studies


def read_mimic_cxr(
    root: str | Path,
    split: str | None = None,
    *,
    sectioned_csv: str | Path | None = None,
    views: Collection[str] | None = None,
    frontal_and_lateral: bool = False,
    check_images: bool = True,
    stats: ReadStats | None = None,
) -> list[StudyRecord]:
    """Read MIMIC-CXR-JPG as one record per study with all its (kept) views and its report.

    Args:
        root: the MIMIC-CXR-JPG 2.0.0 folder (tables + ``files/``).
        split: ``"train"``, ``"val"``, ``"test"`` or None for all three.
        sectioned_csv: path of ``mimic_cxr_sectioned.csv`` (default: inside ``root``).
        views: keep only images whose view is in this set (e.g. ``{"PA", "AP", "LATERAL"}``).
        frontal_and_lateral: keep only studies with at least one PA/AP and one LATERAL image.
        check_images: skip (and count) images whose JPG is missing.
        stats: filled with kept / filtered / skipped counts when given.

    Returns:
        One record per study, images ordered PA, AP, LATERAL, unknown, then by dicom id;
        ``labels`` holds the CheXpert labels when the chexpert table exists, else None.
    """
    root = Path(root)
    stats = stats if stats is not None else ReadStats(NAME)
    wanted = resolve_split(split, NAME, ["train", "val", "test"])
    bad_views = set(views or ()) - set(VIEWS)
    if bad_views:
        raise ReaderError(f"{NAME}: unknown views {sorted(bad_views)}; use {VIEWS}")
    reports_path = Path(sectioned_csv) if sectioned_csv is not None else root / "mimic_cxr_sectioned.csv"
    sections_by_study = load_sections(require_file(reports_path, "MIMIC-CXR sectioned reports CSV"))
    chexpert = first_existing(root / f"{PREFIX}-chexpert{ext}" for ext in (".csv.gz", ".csv"))
    labels_by_study = load_chexpert(chexpert) if chexpert is not None else None
    splits = load_splits(table_path(root, "split"))
    studies = group_images(root, table_path(root, "metadata"), splits, wanted, views, check_images, stats)
    records: list[StudyRecord] = []
    for study_id in sorted(studies):
        images = sorted(studies[study_id], key=lambda im: (_VIEW_ORDER[im["view"]], im["dicom_id"]))
        kinds = {im["view"] for im in images}
        if frontal_and_lateral and not (kinds & {"PA", "AP"} and "LATERAL" in kinds):
            stats.filter("not frontal+lateral")
            continue
        sections = sections_by_study.get(study_id, {})
        report, source = compose_report(sections)
        if not report:
            stats.filter("no report text")
            continue
        records.append(
            StudyRecord(
                dataset=NAME,
                split=images[0]["split"],
                study_id=study_id,
                image_paths=tuple(im["path"] for im in images),
                views=tuple(im["view"] for im in images),
                report=report,
                sections=sections,
                labels=labels_by_study.get(study_id) if labels_by_study is not None else None,
                extra={
                    "subject_id": images[0]["subject_id"],
                    "dicom_ids": [im["dicom_id"] for im in images],
                    "view_positions": [im["raw_view"] for im in images],
                    "study_date": images[0]["date"],
                    "report_source": source,
                },
            )
        )
    stats.finish(len(records))
    return records
