"""Our own SLAKE-style ``qa.json`` over simulated multi-view studies (the phantom's output).

Layout::

    root/qa.json
    root/<study folder>/PA.dcm  PA.png  LL.dcm  LL.png   (any of .dcm / .png / .jpg / .jpeg)

``qa.json`` is a list of ``{"qid", "img_name", "study_id", "question", "answer", "answer_type",
"content_type", "q_lang", "required_view", "split"}``; ``img_name`` is the study folder under
``root``. The view of a file comes from its stem: ``PA``, ``AP``, ``LL`` / ``RL`` / ``LATERAL``;
other files in the folder are ignored. When a view exists in several formats one file is kept,
by ``prefer`` order (DICOM first by default: the same path the served app decodes).
``split`` is ``train`` / ``val`` / ``test`` (``validate`` also accepted).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ._common import (
    MALFORMED,
    MISSING_IMAGE,
    ReadStats,
    dataset_answer_type,
    iter_json_rows,
    require_file,
    resolve_split,
)
from .records import VIEWS, VQARecord, normalize_answer, normalize_view

NAME = "mvcm-qa"
REQUIRED = ("qid", "img_name", "question", "answer", "split")
IMAGE_SUFFIXES = (".dcm", ".png", ".jpg", ".jpeg")
_SPLIT_ALIASES = {"train": "train", "val": "val", "validate": "val", "validation": "val", "test": "test"}
_VIEW_ORDER = {view: rank for rank, view in enumerate(VIEWS)}


def study_views(folder: Path, prefer: Sequence[str] = IMAGE_SUFFIXES) -> list[tuple[Path, str]]:
    """``(file, view)`` of each view image in a study folder, one file per view, PA first.

    Args:
        folder: the study folder.
        prefer: file suffixes in order of preference when a view exists in several formats.
    """
    if not folder.is_dir():
        return []
    best: dict[str, tuple[int, Path]] = {}
    for path in folder.iterdir():
        suffix = path.suffix.lower()
        view = normalize_view(path.stem)
        if suffix not in prefer or view == "unknown" or not path.is_file():
            continue
        rank = prefer.index(suffix)
        if path.stem.upper() not in best or rank < best[path.stem.upper()][0]:
            best[path.stem.upper()] = (rank, path)
    files = [(path, normalize_view(path.stem)) for _, path in best.values()]
    return sorted(files, key=lambda item: (_VIEW_ORDER[item[1]], item[0].name))


def read_mvcm_qa(
    root: str | Path,
    split: str | None = None,
    *,
    prefer: Sequence[str] = IMAGE_SUFFIXES,
    language: str = "en",
    stats: ReadStats | None = None,
) -> list[VQARecord]:
    """Read ``qa.json`` over simulated studies; each record carries every view of its study.

    Args:
        root: folder holding ``qa.json`` and the study folders.
        split: ``"train"``, ``"val"``, ``"test"`` or None for all three.
        prefer: image suffixes in order of preference, e.g. ``(".png", ".dcm")`` for fast training.
        language: ``q_lang`` to keep (rows without ``q_lang`` are kept).
        stats: filled with kept / filtered / skipped counts when given.

    Returns:
        One record per question; ``extra["required_view"]`` says which view the answer needs.
    """
    root = Path(root)
    stats = stats if stats is not None else ReadStats(NAME)
    wanted = resolve_split(split, NAME, ["train", "val", "test"])
    path = require_file(root / "qa.json", "mvcm-qa question file")
    views_cache: dict[str, list[tuple[Path, str]]] = {}
    records: list[VQARecord] = []
    for where, row in iter_json_rows(path, REQUIRED, stats):
        our_split = _SPLIT_ALIASES.get(str(row["split"]).strip().lower())
        if our_split is None:
            stats.skip(MALFORMED, f"{where} split {row['split']!r}")
            continue
        if our_split not in wanted:
            continue
        if str(row.get("q_lang") or language).strip().lower() != language:
            stats.filter(f"q_lang != {language}")
            continue
        folder = str(row["img_name"]).strip()
        if folder not in views_cache:
            views_cache[folder] = study_views(root / folder, prefer)
        files = views_cache[folder]
        if not files:
            stats.skip(MISSING_IMAGE, f"{where} {folder}/")
            continue
        answer = normalize_answer(row["answer"])
        answer_type, source = dataset_answer_type(row.get("answer_type"), answer)
        records.append(
            VQARecord(
                dataset=NAME,
                split=our_split,
                qid=str(row["qid"]),
                image_paths=tuple(p for p, _ in files),
                views=tuple(v for _, v in files),
                question=str(row["question"]).strip(),
                answer=answer,
                answer_raw=str(row["answer"]),
                answer_type=answer_type,
                question_type=str(row.get("content_type") or "").strip(),
                study_id=str(row.get("study_id") or folder),
                extra={"required_view": row.get("required_view", ""), "answer_type_source": source},
            )
        )
    stats.finish(len(records))
    return records
