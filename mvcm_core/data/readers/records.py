"""The two record types every dataset reader returns, and the normalisations they share.

A :class:`VQARecord` is one question about one image (VQA-RAD, SLAKE, PathVQA, VQA-Med-2019) or
about all views of one study (MIMIC-style studies, our simulated ``mvcm-qa``). A
:class:`StudyRecord` is one study (or one captioned image) with its report text, for pretraining
and retrieval (MIMIC-CXR, Open-I, ROCO). Both are frozen, picklable dataclasses holding only
builtin types and :class:`~pathlib.Path`, so torch ``Dataset`` wrappers can ship them to workers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SPLITS: tuple[str, ...] = ("train", "val", "test")
VIEWS: tuple[str, ...] = ("PA", "AP", "LATERAL", "unknown")
ANSWER_TYPES: tuple[str, ...] = ("OPEN", "CLOSED")
YES_NO: frozenset[str] = frozenset({"yes", "no"})

# raw view labels (DICOM ViewPosition, MIMIC metadata, file stems) -> our four views
_VIEW_ALIASES = {
    "PA": "PA",
    "POSTEROANTERIOR": "PA",
    "POSTERO-ANTERIOR": "PA",
    "AP": "AP",
    "ANTEROPOSTERIOR": "AP",
    "ANTERO-POSTERIOR": "AP",
    "LATERAL": "LATERAL",
    "LAT": "LATERAL",
    "LL": "LATERAL",
    "RL": "LATERAL",
    "XTABLE LATERAL": "LATERAL",
}
_TRAILING_PUNCTUATION = ".,;:!?"
_WHITESPACE = re.compile(r"\s+")


def normalize_answer(raw: Any) -> str:
    """Lower-case, strip, collapse whitespace and drop trailing punctuation (``"Yes."`` -> ``"yes"``).

    Numbers are accepted (VQA-RAD stores a few answers as JSON integers): ``2`` -> ``"2"``.
    Nothing else is changed (no article removal, no number words), so the mapping is easy to audit.
    """
    text = _WHITESPACE.sub(" ", str(raw)).strip().lower()
    return text.rstrip(_TRAILING_PUNCTUATION + " ")


def normalize_view(raw: str | None) -> str:
    """Map a raw view label (``"PA"``, ``"LL"``, ``"AP AXIAL"``, ...) to one of :data:`VIEWS`."""
    if not raw:
        return "unknown"
    return _VIEW_ALIASES.get(str(raw).strip().upper(), "unknown")


def answer_type_from_answer(answer: str) -> str:
    """The yes/no convention (AMiF / MVCM): ``CLOSED`` iff the normalised answer is yes or no."""
    return "CLOSED" if answer in YES_NO else "OPEN"


def _as_paths(values: Any) -> tuple[Path, ...]:
    if isinstance(values, (str, Path)):
        values = (values,)
    return tuple(Path(v) for v in values)


def _check_common(kind: str, split: str, image_paths: tuple[Path, ...], views: tuple[str, ...]) -> None:
    if split not in SPLITS:
        raise ValueError(f"{kind}.split must be one of {SPLITS}, got {split!r}")
    if len(views) != len(image_paths):
        raise ValueError(f"{kind}: {len(image_paths)} image paths but {len(views)} views")
    bad = [v for v in views if v not in VIEWS]
    if bad:
        raise ValueError(f"{kind}.views must be in {VIEWS}, got {bad}")


@dataclass(frozen=True)
class VQARecord:
    """One question-answer pair about one image or one multi-view study.

    Attributes:
        dataset: registry name of the source dataset (``"vqa-rad"``, ``"slake"``, ...).
        split: ``"train"``, ``"val"`` or ``"test"`` (the dataset's own split, renamed).
        qid: question id, unique within the dataset (the dataset's own id where it has one).
        image_paths: one path for single-image datasets, one per view for a study.
        views: ``"PA"`` / ``"AP"`` / ``"LATERAL"`` / ``"unknown"``, aligned with ``image_paths``.
        question: the question text as released (whitespace-stripped).
        answer: normalised answer (see :func:`normalize_answer`); the label space of fine-tuning.
        answer_raw: the answer exactly as released, converted to ``str``.
        answer_type: ``"OPEN"`` or ``"CLOSED"``, from the dataset's own field where it has one,
            otherwise from the yes/no convention (``extra["answer_type_source"]`` says which).
        question_type: the dataset's question / content type or category, ``""`` if none.
        study_id: image or study identifier; questions sharing it share pixels (use it to keep
            an image on one side of any split carved from train).
        extra: dataset-specific fields kept verbatim (organ, modality, phrase type, ...).
    """

    dataset: str
    split: str
    qid: str
    image_paths: tuple[Path, ...]
    views: tuple[str, ...]
    question: str
    answer: str
    answer_raw: str
    answer_type: str
    question_type: str = ""
    study_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_paths", _as_paths(self.image_paths))
        object.__setattr__(self, "views", tuple(self.views))
        _check_common("VQARecord", self.split, self.image_paths, self.views)
        if self.answer_type not in ANSWER_TYPES:
            raise ValueError(f"VQARecord.answer_type must be in {ANSWER_TYPES}, got {self.answer_type!r}")

    @property
    def is_yes_no(self) -> bool:
        """True iff the normalised answer is ``yes`` or ``no`` (the AMiF / MVCM closed convention)."""
        return self.answer in YES_NO


@dataclass(frozen=True)
class StudyRecord:
    """One study (all its views) or one captioned image, with its report text.

    Attributes:
        dataset: registry name of the source dataset (``"mimic-cxr"``, ``"openi-images"``, ``"roco"``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        study_id: the dataset's study id (MIMIC ``s5...`` without the ``s``, Open-I ``CXR<n>``, ROCO id).
        image_paths: every kept image of the study.
        views: aligned with ``image_paths``, one of ``"PA"``, ``"AP"``, ``"LATERAL"``, ``"unknown"``.
        report: the text the model aligns with (findings then impression, or the caption).
        sections: the named sections the report was built from (``findings``, ``impression``, ...).
        labels: structured labels when the dataset has them (MIMIC CheXpert: name -> 1.0 / 0.0 /
            -1.0 uncertain / None not mentioned), else None.
        extra: dataset-specific fields (subject id, raw view positions, dicom ids, ...).
    """

    dataset: str
    split: str
    study_id: str
    image_paths: tuple[Path, ...]
    views: tuple[str, ...]
    report: str
    sections: dict[str, str] = field(default_factory=dict, hash=False)
    labels: dict[str, Any] | None = field(default=None, hash=False)
    extra: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_paths", _as_paths(self.image_paths))
        object.__setattr__(self, "views", tuple(self.views))
        _check_common("StudyRecord", self.split, self.image_paths, self.views)
