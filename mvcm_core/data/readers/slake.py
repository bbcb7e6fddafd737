"""SLAKE (English subset) in its official release layout.

Layout (``root`` is the unzipped ``Slake1.0/`` folder)::

    root/train.json  root/validate.json  root/test.json
    root/imgs/xmlab0/source.jpg   (plus mask.png, detection.json, question.json we ignore)

Each JSON file is a list of objects with ``img_id`` (int), ``img_name`` (``"xmlab0/source.jpg"``,
relative to ``imgs/``), ``question``, ``answer``, ``q_lang`` (``"en"`` / ``"zh"``), ``location``,
``modality``, ``answer_type`` (``OPEN`` / ``CLOSED``), ``base_type`` (``vqa`` / ``kvqa``),
``content_type`` (``Organ``, ``Abnormality``, ``Position``, ...), ``triple`` and ``qid``.
Only ``q_lang == "en"`` rows are kept; the others are counted as filtered, not as errors.
Splits: ``train`` -> train, ``validate`` -> val, ``test`` -> test.
"""

from __future__ import annotations

from pathlib import Path

from ._common import (
    MISSING_IMAGE,
    ReadStats,
    dataset_answer_type,
    image_present,
    iter_json_rows,
    require_dir,
    resolve_split,
)
from .records import VQARecord, normalize_answer

NAME = "slake"
SPLIT_FILES = {"train": "train.json", "val": "validate.json", "test": "test.json"}
REQUIRED = ("qid", "img_name", "question", "answer", "q_lang")
EXTRA_FIELDS = ("img_id", "location", "modality", "base_type", "triple")


def read_slake(
    root: str | Path,
    split: str | None = None,
    *,
    language: str = "en",
    check_images: bool = True,
    stats: ReadStats | None = None,
) -> list[VQARecord]:
    """Read SLAKE's ``train.json`` / ``validate.json`` / ``test.json``, one language only.

    Args:
        root: the ``Slake1.0`` folder (holding the JSON files and ``imgs/``).
        split: ``"train"``, ``"val"``, ``"test"`` or None for all three.
        language: ``q_lang`` to keep (``"en"``; the literature's SLAKE-EN).
        check_images: skip (and count) questions whose image file is missing.
        stats: filled with kept / filtered / skipped counts when given.

    Returns:
        One record per question; ``study_id`` is the image folder (``xmlab0``) and
        ``question_type`` the ``content_type``.
    """
    root = Path(root)
    stats = stats if stats is not None else ReadStats(NAME)
    splits = resolve_split(split, NAME, list(SPLIT_FILES))
    image_dir = require_dir(root / "imgs", "SLAKE image")
    records: list[VQARecord] = []
    for our_split in splits:
        for where, row in iter_json_rows(root / SPLIT_FILES[our_split], REQUIRED, stats):
            if str(row["q_lang"]).strip().lower() != language:
                stats.filter(f"q_lang != {language}")
                continue
            img_name = str(row["img_name"]).strip()
            image_path = image_dir / img_name
            if not image_present(image_path, check_images):
                stats.skip(MISSING_IMAGE, f"{where} {img_name}")
                continue
            answer = normalize_answer(row["answer"])
            answer_type, source = dataset_answer_type(row.get("answer_type"), answer)
            extra = {key: row[key] for key in EXTRA_FIELDS if key in row}
            extra["answer_type_source"] = source
            records.append(
                VQARecord(
                    dataset=NAME,
                    split=our_split,
                    qid=str(row["qid"]),
                    image_paths=(image_path,),
                    views=("unknown",),
                    question=str(row["question"]).strip(),
                    answer=answer,
                    answer_raw=str(row["answer"]),
                    answer_type=answer_type,
                    question_type=str(row.get("content_type") or "").strip(),
                    study_id=Path(img_name).parent.name or Path(img_name).stem,
                    extra=extra,
                )
            )
    stats.finish(len(records))
    return records
