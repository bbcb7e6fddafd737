"""Open-I (Indiana University chest X-ray) images, grouped per report, for users who have them.

Layout (``root`` holds the unpacked ``NLMCXR_png.tgz``; ``root`` may also be that folder)::

    root/NLMCXR_png/CXR1_1_IM-0001-3001.png
    root/NLMCXR_png/CXR1_1_IM-0001-4001.png

The reports (``NLMCXR_reports.tgz``, one XML per report) are parsed by
:mod:`mvcm_core.data.openi`, not here. ``reports`` is either that parser's list of
``OpenIReport`` objects (``load_openi().reports``; text from ``findings_text`` and ``impression``,
split from ``split``) or a mapping ``uid -> entry`` where ``uid`` is the report's
``<uId id="CXR1"/>`` and an entry is a tuple ``(image_ids, findings, impression)`` (optionally a
fourth item: views) or an object with those attributes. ``image_ids`` are the report's
``<parentImage id=...>`` values (PNG stems). Views are ``unknown`` unless the entry gives them:
Open-I file names do not encode the view.

Open-I has no official split. ``splits`` (uid -> ``"train"`` / ``"val"`` / ``"test"``, or
``(split, study_id)`` as ``openi.read_r2gen_splits`` returns) takes precedence, e.g.
:func:`load_r2gen_splits` of the R2Gen CSV (2,069 / 296 / 590 studies); reports outside it are
filtered out. Without ``splits`` each entry's own ``split`` attribute is used (``OpenIReport``
puts reports outside R2Gen in train); entries with neither are filtered out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mvcm_core.data.openi import read_r2gen_splits

from ._common import MISSING_IMAGE, ReaderError, ReadStats, image_present, resolve_split
from .records import SPLITS, StudyRecord, normalize_view

NAME = "openi-images"
IMAGE_FOLDER = "NLMCXR_png"
_SPLIT_ALIASES = {"train": "train", "val": "val", "validate": "val", "validation": "val", "test": "test"}


def load_r2gen_splits(path: str | Path) -> dict[str, str]:
    """uid (``CXR2``) -> split, from the R2Gen CSV (parsed by :func:`mvcm_core.data.openi.read_r2gen_splits`)."""
    try:
        return {uid: split for uid, (split, _) in read_r2gen_splits(path).items()}
    except (KeyError, ValueError, OSError) as exc:
        raise ReaderError(f"{path}: not a valid R2Gen split CSV ({exc})") from None


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _entry_fields(entry: Any) -> tuple[list[str], str, str, Any]:
    """``(image_ids, findings, impression, views)`` from a tuple or an attribute-style entry."""
    if isinstance(entry, Sequence) and not isinstance(entry, str):
        if len(entry) not in (3, 4):
            raise ValueError("expected (image_ids, findings, impression[, views])")
        image_ids, findings, impression = entry[:3]
        views = entry[3] if len(entry) == 4 else None
    else:  # OpenIReport keeps the text in findings_text; its findings are structured
        findings = getattr(entry, "findings_text", None)
        findings = findings if findings is not None else entry.findings
        image_ids, impression, views = entry.image_ids, entry.impression, getattr(entry, "views", None)
    return [str(i) for i in image_ids], _text(findings), _text(impression), views


def _split_of(uid: str, entry: Any, splits: Mapping[str, Any] | None) -> str | None:
    """Our split name for one report, from ``splits`` if given, else the entry's ``split`` attribute."""
    raw = splits.get(uid) if splits is not None else getattr(entry, "split", None)
    if isinstance(raw, (tuple, list)) and raw:
        raw = raw[0]
    return _SPLIT_ALIASES.get(str(raw or "").strip().lower())


def _as_mapping(reports: Any) -> Mapping[str, Any]:
    if isinstance(reports, Mapping):
        return reports
    try:
        return {str(report.uid): report for report in reports}
    except (TypeError, AttributeError):
        raise ReaderError(
            f"{NAME}: reports must be a mapping uid -> entry or a list of reports with .uid"
        ) from None


def _view_of(views: Any, index: int, image_id: str) -> str:
    if isinstance(views, Mapping):
        return normalize_view(views.get(image_id))
    if isinstance(views, Sequence) and not isinstance(views, str) and index < len(views):
        return normalize_view(views[index])
    return "unknown"


def read_openi_images(
    root: str | Path,
    split: str | None = None,
    *,
    reports: Mapping[str, Any] | Iterable[Any] | None = None,
    splits: Mapping[str, Any] | None = None,
    check_images: bool = True,
    stats: ReadStats | None = None,
) -> list[StudyRecord]:
    """Pair Open-I PNGs with parsed reports, one record per report.

    Args:
        root: folder holding ``NLMCXR_png/`` (or that folder itself).
        split: ``"train"``, ``"val"``, ``"test"`` or None for all three.
        reports: ``OpenIReport`` list, or uid -> ``(image_ids, findings, impression)`` (see the
            module docstring).
        splits: uid -> ``"train"`` / ``"val"`` / ``"test"`` (or ``(split, study_id)``); default:
            each report's own ``split`` attribute.
        check_images: drop (and count) images whose PNG is missing.
        stats: filled with kept / filtered / skipped counts when given.

    Returns:
        One record per report with text and at least one image; ``report`` is findings then
        impression, ``study_id`` the uid.
    """
    if reports is None:
        raise ReaderError(f"{NAME} needs reports= (parsed NLMCXR reports, see mvcm_core.data.openi)")
    reports = _as_mapping(reports)
    root = Path(root)
    image_dir = root / IMAGE_FOLDER if (root / IMAGE_FOLDER).is_dir() else root
    if check_images and not any(image_dir.glob("*.png")):
        raise ReaderError(f"missing Open-I images: no PNG in {root / IMAGE_FOLDER}")
    wanted = resolve_split(split, NAME, list(SPLITS))
    stats = stats if stats is not None else ReadStats(NAME)
    records: list[StudyRecord] = []
    for uid in sorted(reports, key=lambda u: (len(u), u)):
        our_split = _split_of(uid, reports[uid], splits)
        if our_split is None:
            stats.filter("no split")
            continue
        if our_split not in wanted:
            continue
        try:
            image_ids, findings, impression, views = _entry_fields(reports[uid])
        except (ValueError, TypeError, AttributeError) as err:
            stats.skip("malformed report entry", f"reports[{uid!r}]: {err}")
            continue
        sections = {key: text for key, text in (("findings", findings), ("impression", impression)) if text}
        if not sections:
            stats.filter("no report text")
            continue
        kept: list[tuple[Path, str]] = []
        for index, image_id in enumerate(image_ids):
            path = image_dir / f"{image_id}.png"
            if image_present(path, check_images):
                kept.append((path, _view_of(views, index, image_id)))
            else:
                stats.skip(MISSING_IMAGE, f"{uid} {path.name}")
        if not kept:
            stats.filter("no images")
            continue
        records.append(
            StudyRecord(
                dataset=NAME,
                split=our_split,
                study_id=uid,
                image_paths=tuple(path for path, _ in kept),
                views=tuple(view for _, view in kept),
                report="\n".join(sections.values()),
                sections=sections,
                extra={
                    "image_ids": [path.stem for path, _ in kept],
                    "r2gen_study_id": str(getattr(reports[uid], "study_id", "") or ""),
                },
            )
        )
    stats.finish(len(records))
    return records
