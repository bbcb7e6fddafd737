"""Name -> reader registry, :func:`read_dataset` and per-dataset counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._common import ReaderError, ReadStats
from .mimic_cxr import read_mimic_cxr
from .mvcm_qa import read_mvcm_qa
from .openi_images import read_openi_images
from .pathvqa import read_pathvqa
from .records import StudyRecord, VQARecord
from .roco import read_roco
from .slake import read_slake
from .vqa_med_2019 import read_vqa_med_2019
from .vqa_rad import read_vqa_rad

Reader = Callable[..., "list[VQARecord] | list[StudyRecord]"]

READERS: dict[str, Reader] = {
    "vqa-rad": read_vqa_rad,
    "slake": read_slake,
    "pathvqa": read_pathvqa,
    "vqa-med-2019": read_vqa_med_2019,
    "roco": read_roco,
    "mimic-cxr": read_mimic_cxr,
    "openi-images": read_openi_images,
    "mvcm-qa": read_mvcm_qa,
}


def read_dataset(
    name: str, root: str | Path, split: str | None = None, **options: Any
) -> list[VQARecord] | list[StudyRecord]:
    """Read a dataset in its native layout.

    Args:
        name: a key of :data:`READERS`.
        root: the dataset's root folder (see ``docs/datasets.md`` for each layout).
        split: ``"train"``, ``"val"``, ``"test"`` or None for every split the dataset has.
        **options: reader-specific keywords (``check_images``, ``stats``, ``views``,
            ``reports`` / ``splits`` for Open-I, ...).

    Returns:
        :class:`VQARecord` list for VQA datasets, :class:`StudyRecord` list for report/caption ones.

    Raises:
        ReaderError: unknown name, missing file, wrong columns or a file that is not this format.
    """
    if name not in READERS:
        raise ReaderError(f"unknown dataset {name!r}; known: {', '.join(READERS)}")
    if not Path(root).is_dir():
        raise ReaderError(f"{name}: dataset root is not a folder: {root}")
    return READERS[name](root, split, **options)


def count_records(records: Sequence[VQARecord | StudyRecord]) -> dict[str, Counter]:
    """Counts per split, and for VQA records per answer type and yes/no, for a quick look."""
    counts: dict[str, Counter] = {"split": Counter(r.split for r in records)}
    vqa = [r for r in records if isinstance(r, VQARecord)]
    if vqa:
        counts["answer_type"] = Counter(r.answer_type for r in vqa)
        counts["yes/no"] = Counter("yes/no" if r.is_yes_no else "other" for r in vqa)
    else:
        counts["views"] = Counter("+".join(r.views) for r in records)
    return counts


def describe(name: str, root: str | Path, split: str | None = None, **options: Any) -> str:
    """Read a dataset and return a short multi-line summary (counts and skip statistics)."""
    stats = ReadStats(name)
    records = read_dataset(name, root, split, stats=stats, **options)
    lines = [stats.summary()]
    for key, counter in count_records(records).items():
        top = ", ".join(f"{k}: {v}" for k, v in counter.most_common(8))
        lines.append(f"  {key}: {top}")
    return "\n".join(lines)
