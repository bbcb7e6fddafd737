"""PathVQA in the authors' released layout (``pvqa.zip``), plus the common JSON conversion.

Layout (``root`` is the unzipped ``pvqa/`` folder)::

    root/images/{train,val,test}/train_0422.jpg
    root/qas/{train,val,test}_vqa.pkl          preferred: has answer_type and question_type
    root/qas/{train,val,test}/{split}_qa.pkl   fallback: image, question, answer only

``*_vqa.pkl`` (LXMERT style) is a list of dicts ``{"img_id", "sent", "label": {answer: score},
"answer_type": "yes/no" | "other", "question_type", "question_id"}``; ``*_qa.pkl`` is a list of
``{"image", "question", "answer"}``. The JSON conversions used by MVCM/AMiF are also accepted:
``qas/{split}/{split}_qa.json`` or ``root/{split}.json`` with ``image_name`` / ``image``,
``question``, ``answer``.

Pickles are read with an unpickler that refuses every class, so a pickle can only yield
lists, dicts, strings and numbers and cannot run code; a pickle that needs a class fails with
one line. ``answer_type``: ``yes/no`` -> CLOSED, anything else -> OPEN (the PathVQA convention,
identical to the yes/no rule). Splits: train / val / test, all official.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from ._common import (
    MALFORMED,
    MISSING_IMAGE,
    ReaderError,
    ReadStats,
    check_malformed_fraction,
    image_present,
    load_json_list,
    require_dir,
    resolve_split,
)
from .records import VQARecord, answer_type_from_answer, normalize_answer

NAME = "pathvqa"
SPLITS = ("train", "val", "test")


class _NoClassUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global, so only builtin containers and scalars load."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load class {module}.{name}")


def load_plain_pickle(path: Path) -> list[Any]:
    """Load a pickle holding only builtin containers and scalars; anything else is a ReaderError."""
    try:
        with path.open("rb") as handle:
            data = _NoClassUnpickler(handle).load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError) as err:
        raise ReaderError(f"{path}: cannot read pickle safely ({err})") from None
    if not isinstance(data, list):
        raise ReaderError(f"{path}: expected a list of QA records, got {type(data).__name__}")
    return data


def qa_file(root: Path, split: str) -> Path:
    """The QA file of one split, in order of preference (see the module docstring)."""
    candidates = (
        root / "qas" / f"{split}_vqa.pkl",
        root / "qas" / split / f"{split}_qa.pkl",
        root / "qas" / split / f"{split}_qa.json",
        root / f"{split}.json",
    )
    for path in candidates:
        if path.is_file():
            return path
    raise ReaderError(f"missing PathVQA QA file: {candidates[0]} (or {candidates[1].name}, {split}_qa.json)")


def _answer_of(row: dict[str, Any]) -> Any:
    if row.get("answer") is not None:
        return row["answer"]
    label = row.get("label")
    if isinstance(label, dict) and label:
        return max(label, key=lambda key: label[key] or 0)
    return None


def _fields(row: Any) -> tuple[str, str, Any] | None:
    """``(image, question, raw answer)`` of one row in any supported variant, or None if malformed."""
    if not isinstance(row, dict):
        return None
    image = row.get("img_id") or row.get("image") or row.get("image_name")
    question = row.get("sent") or row.get("question")
    answer = _answer_of(row)
    if not image or not question or answer is None:
        return None
    return str(image).strip(), str(question).strip(), answer


def _image_path(root: Path, split: str, image: str) -> Path:
    name = image if Path(image).suffix else f"{image}.jpg"
    in_split, flat = root / "images" / split / name, root / "images" / name
    return flat if not in_split.exists() and flat.exists() else in_split


def _answer_type(row: dict[str, Any], answer: str) -> tuple[str, str]:
    raw = str(row.get("answer_type") or "").strip().lower()
    if raw in ("yes/no", "closed"):
        return "CLOSED", "dataset"
    if raw in ("other", "open"):
        return "OPEN", "dataset"
    return answer_type_from_answer(answer), "yes/no"


def read_pathvqa(
    root: str | Path,
    split: str | None = None,
    *,
    check_images: bool = True,
    stats: ReadStats | None = None,
) -> list[VQARecord]:
    """Read PathVQA from ``pvqa/qas`` pickles (or the JSON conversion) and ``pvqa/images``.

    Args:
        root: the ``pvqa`` folder.
        split: ``"train"``, ``"val"``, ``"test"`` or None for all three.
        check_images: skip (and count) questions whose image file is missing.
        stats: filled with kept / skipped counts when given.

    Returns:
        One record per question; ``study_id`` is the image id (``train_0422``).
    """
    root = Path(root)
    stats = stats if stats is not None else ReadStats(NAME)
    splits = resolve_split(split, NAME, list(SPLITS))
    require_dir(root / "images", "PathVQA image")
    records: list[VQARecord] = []
    for our_split in splits:
        path = qa_file(root, our_split)
        rows = load_plain_pickle(path) if path.suffix == ".pkl" else load_json_list(path)
        before = stats.skipped[MALFORMED]
        for index, row in enumerate(rows):
            where = f"{path.name}[{index}]"
            fields = _fields(row)
            if fields is None:
                stats.skip(MALFORMED, where)
                continue
            image, question, raw_answer = fields
            image_path = _image_path(root, our_split, image)
            if not image_present(image_path, check_images):
                stats.skip(MISSING_IMAGE, f"{where} {image_path.name}")
                continue
            answer = normalize_answer(raw_answer)
            answer_type, source = _answer_type(row, answer)
            records.append(
                VQARecord(
                    dataset=NAME,
                    split=our_split,
                    qid=str(row.get("question_id") or row.get("qid") or f"{our_split}-{index}"),
                    image_paths=(image_path,),
                    views=("unknown",),
                    question=question,
                    answer=answer,
                    answer_raw=str(raw_answer),
                    answer_type=answer_type,
                    question_type=str(row.get("question_type") or "").strip(),
                    study_id=image_path.stem,
                    extra={"answer_type_source": source, "qa_file": path.name},
                )
            )
        check_malformed_fraction(stats, path, before, len(rows))
    stats.finish(len(records))
    return records
