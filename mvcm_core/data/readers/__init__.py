"""Readers for public medical VQA / report datasets in their native layouts.

Every reader returns plain records (:class:`VQARecord` or :class:`StudyRecord`); torch
``Dataset`` wrappers are built on top of them elsewhere. Uses the standard library only.

Example:
    >>> from mvcm_core.data.readers import read_dataset
    >>> records = read_dataset("vqa-rad", "data/data_RAD", split="train")  # doctest: +SKIP
"""

from ._common import ReaderError, ReaderWarning, ReadStats
from .openi_images import load_r2gen_splits
from .records import (
    ANSWER_TYPES,
    SPLITS,
    VIEWS,
    StudyRecord,
    VQARecord,
    answer_type_from_answer,
    normalize_answer,
    normalize_view,
)
from .registry import READERS, count_records, describe, read_dataset

__all__ = [
    "ANSWER_TYPES",
    "READERS",
    "SPLITS",
    "VIEWS",
    "ReadStats",
    "ReaderError",
    "ReaderWarning",
    "StudyRecord",
    "VQARecord",
    "answer_type_from_answer",
    "count_records",
    "describe",
    "load_r2gen_splits",
    "normalize_answer",
    "normalize_view",
    "read_dataset",
]
