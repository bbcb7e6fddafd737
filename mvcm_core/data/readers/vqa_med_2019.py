"""VQA-Med-2019 (ImageCLEF) in its released layout: the three unzipped archives side by side.

Layout (``root`` holds the three folders exactly as unzipped)::

    root/ImageClef-2019-VQA-Med-Training/QAPairsByCategory/C1_Modality_train.txt
                                         .../C2_Plane_train.txt, C3_Organ_train.txt, C4_Abnormality_train.txt
    root/ImageClef-2019-VQA-Med-Training/All_QA_Pairs_train.txt      (fallback: no category)
    root/ImageClef-2019-VQA-Med-Training/Train_images/synpic100.jpg
    root/ImageClef-2019-VQA-Med-Validation/  same with ``_val`` and ``Val_images/``
    root/VQAMed2019Test/VQAMed2019_Test_Questions_w_Ref_Answers.txt
    root/VQAMed2019Test/VQAMed2019_Test_Images/synpic100.jpg

Train / validation lines are ``image_id|question|answer``; test lines are
``image_id|category|question|answer``. ``question_type`` is the category (``modality``,
``plane``, ``organ``, ``abnormality``). The dataset has no answer-type field: ``answer_type``
follows the yes/no rule (M3AE instead counts everything OPEN; ``is_yes_no`` gives both).
Splits: Training -> train (12,792 QA), Validation -> val (2,000), Test -> test (500).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path

from ._common import (
    MALFORMED,
    MISSING_IMAGE,
    ReaderError,
    ReadStats,
    check_malformed_fraction,
    image_present,
    require_dir,
    require_file,
    resolve_split,
)
from .records import VQARecord, answer_type_from_answer, normalize_answer

NAME = "vqa-med-2019"
CATEGORIES = ("modality", "plane", "organ", "abnormality")
# our split -> (folder, file suffix, image folder)
SPLIT_FOLDERS = {
    "train": ("ImageClef-2019-VQA-Med-Training", "train", "Train_images"),
    "val": ("ImageClef-2019-VQA-Med-Validation", "val", "Val_images"),
}
TEST_FOLDER = "VQAMed2019Test"
TEST_QA = "VQAMed2019_Test_Questions_w_Ref_Answers.txt"
TEST_IMAGES = "VQAMed2019_Test_Images"


def category_files(split_dir: Path, suffix: str) -> list[tuple[Path, str]]:
    """``(file, category)`` pairs: the four per-category files, else ``All_QA_Pairs_*`` with no category."""
    by_category = split_dir / "QAPairsByCategory"
    found = [
        (by_category / f"C{index}_{category.capitalize()}_{suffix}.txt", category)
        for index, category in enumerate(CATEGORIES, start=1)
    ]
    found = [(path, category) for path, category in found if path.is_file()]
    if found:
        return found
    return [(require_file(split_dir / f"All_QA_Pairs_{suffix}.txt", "VQA-Med-2019 QA file"), "")]


def iter_pipe_lines(path: Path, n_fields: int) -> Iterator[tuple[int, list[str] | None]]:
    """Yield ``(line number, fields)`` of a ``|``-separated file; fields is None for a malformed line."""
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as err:
        raise ReaderError(f"{path}: cannot read ({err})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = [part.strip() for part in line.split("|", n_fields - 1)]
        yield number, fields if len(fields) == n_fields and all(fields) else None


def _qa_sources(root: Path, our_split: str) -> tuple[list[tuple[Path, str]], Path, int]:
    """``([(file, category)], image dir, fields per line)`` of one split."""
    if our_split == "test":
        folder = require_dir(root / TEST_FOLDER, "VQA-Med-2019 test")
        return [(require_file(folder / TEST_QA, "VQA-Med-2019 test QA file"), "")], folder / TEST_IMAGES, 4
    folder_name, suffix, image_folder = SPLIT_FOLDERS[our_split]
    folder = require_dir(root / folder_name, f"VQA-Med-2019 {our_split}")
    return category_files(folder, suffix), folder / image_folder, 3


def read_vqa_med_2019(
    root: str | Path,
    split: str | None = None,
    *,
    categories: Collection[str] | None = None,
    check_images: bool = True,
    stats: ReadStats | None = None,
) -> list[VQARecord]:
    """Read VQA-Med-2019 from the ImageCLEF training, validation and test folders.

    Args:
        root: folder holding the three unzipped release folders.
        split: ``"train"``, ``"val"``, ``"test"`` or None for all three.
        categories: keep only these categories (M3AE uses modality, plane, organ); needs the
            per-category files for train / val.
        check_images: skip (and count) questions whose image file is missing.
        stats: filled with kept / filtered / skipped counts when given.

    Returns:
        One record per question; ``study_id`` is the image id (``synpic100``).
    """
    root = Path(root)
    stats = stats if stats is not None else ReadStats(NAME)
    splits = resolve_split(split, NAME, ["train", "val", "test"])
    wanted = {c.lower() for c in categories} if categories is not None else None
    if wanted is not None and not wanted <= set(CATEGORIES):
        raise ReaderError(f"{NAME}: unknown categories {sorted(wanted - set(CATEGORIES))}; use {CATEGORIES}")
    records: list[VQARecord] = []
    for our_split in splits:
        sources, image_dir, n_fields = _qa_sources(root, our_split)
        for path, file_category in sources:
            before, rows = stats.skipped[MALFORMED], 0
            for number, fields in iter_pipe_lines(path, n_fields):
                rows += 1
                where = f"{path.name}:{number}"
                if fields is None:
                    stats.skip(MALFORMED, where)
                    continue
                image_id, question, raw_answer = fields[0], fields[-2], fields[-1]
                category = fields[1].lower() if n_fields == 4 else file_category
                if wanted is not None and category not in wanted:
                    if not category:
                        raise ReaderError(
                            f"{path}: has no categories; the category filter needs QAPairsByCategory/"
                        )
                    stats.filter(f"category {category}")
                    continue
                image_path = image_dir / f"{image_id}.jpg"
                if not image_present(image_path, check_images):
                    stats.skip(MISSING_IMAGE, f"{where} {image_path.name}")
                    continue
                answer = normalize_answer(raw_answer)
                records.append(
                    VQARecord(
                        dataset=NAME,
                        split=our_split,
                        qid=f"{our_split}:{path.stem}:{number}",
                        image_paths=(image_path,),
                        views=("unknown",),
                        question=question,
                        answer=answer,
                        answer_raw=raw_answer,
                        answer_type=answer_type_from_answer(answer),
                        question_type=category,
                        study_id=image_id,
                        extra={"answer_type_source": "yes/no"},
                    )
                )
            check_malformed_fraction(stats, path, before, rows)
    stats.finish(len(records))
    return records
