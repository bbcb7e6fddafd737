"""VQA-RAD in the MEVF release layout (the 3,064 / 451 split used by the classification literature).

Layout (``root`` is MEVF's ``data_RAD/`` folder, or any folder laid out the same way)::

    root/trainset.json
    root/testset.json
    root/images/synpic54610.jpg          (MEVF) or
    root/VQA_RAD Image Folder/synpic54610.jpg   (OSF image folder name)

Each JSON file is a list of objects with ``qid``, ``image_name``, ``image_organ``, ``answer``
(a string, or a JSON number for a few counting questions), ``answer_type`` (``OPEN`` / ``CLOSED``,
sometimes with stray spaces or case), ``question_type``, ``question`` and ``phrase_type``
(``freeform`` / ``para`` in train, ``test_freeform`` / ``test_para`` in test).

There is no validation split: fine-tuning carves one from train (grouping by ``study_id``, the
image, because MEVF's train and test share images). Selecting on ``testset.json`` is the
literature's leaky protocol; report it separately.
"""

from __future__ import annotations

from pathlib import Path

from ._common import (
    MISSING_IMAGE,
    ReaderError,
    ReadStats,
    dataset_answer_type,
    first_existing,
    image_present,
    iter_json_rows,
    resolve_split,
)
from .records import VQARecord, normalize_answer

NAME = "vqa-rad"
SPLIT_FILES = {"train": "trainset.json", "test": "testset.json"}
IMAGE_DIRS = ("images", "VQA_RAD Image Folder")
REQUIRED = ("qid", "image_name", "question", "answer")
EXTRA_FIELDS = ("image_organ", "phrase_type")


def find_image_dir(root: Path) -> Path:
    """The image folder of a VQA-RAD root (``images/`` or ``VQA_RAD Image Folder/``)."""
    found = first_existing(root / name for name in IMAGE_DIRS)
    if found is None:
        raise ReaderError(f"missing VQA-RAD image folder: {root / IMAGE_DIRS[0]} (or {root / IMAGE_DIRS[1]})")
    return found


def read_vqa_rad(
    root: str | Path,
    split: str | None = None,
    *,
    check_images: bool = True,
    stats: ReadStats | None = None,
) -> list[VQARecord]:
    """Read VQA-RAD (MEVF ``trainset.json`` / ``testset.json``).

    Args:
        root: folder holding the two JSON files and the image folder.
        split: ``"train"``, ``"test"`` or None for both; ``"val"`` is an error (none exists).
        check_images: skip (and count) questions whose image file is missing.
        stats: filled with kept / skipped counts when given.

    Returns:
        One record per question; ``study_id`` is the image stem (``synpic54610``).
    """
    root = Path(root)
    stats = stats if stats is not None else ReadStats(NAME)
    splits = resolve_split(split, NAME, list(SPLIT_FILES), "; carve a validation set from train")
    image_dir = find_image_dir(root)
    records: list[VQARecord] = []
    for our_split in splits:
        path = root / SPLIT_FILES[our_split]
        for where, row in iter_json_rows(path, REQUIRED, stats):
            image_path = image_dir / str(row["image_name"]).strip()
            if not image_present(image_path, check_images):
                stats.skip(MISSING_IMAGE, f"{where} {image_path.name}")
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
                    question_type=str(row.get("question_type") or "").strip(),
                    study_id=image_path.stem,
                    extra=extra,
                )
            )
    stats.finish(len(records))
    return records
