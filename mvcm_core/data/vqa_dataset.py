"""VQA examples from our simulated studies (``qa.json`` + :class:`StudyStore`) or from public-dataset
records (:class:`~mvcm_core.data.readers.records.VQARecord`), in one form for training and evaluation.

Images of public datasets are read with the same code as uploads (DICOM or PNG / JPEG → windowed →
:func:`~mvcm_core.data.transforms.view_to_input`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from mvcm_core.config import ModelCfg
from mvcm_core.data.batching import image_batch
from mvcm_core.data.study_store import StudyStore
from mvcm_core.data.transforms import view_to_input

VIEW_CHOICES = ("both", "frontal", "lateral")


@dataclass
class VQAExample:
    """One question about one study (views already preprocessed to uint8 ``[S, S]``)."""

    qid: str
    split: str
    study_id: str
    views: list[np.ndarray]
    view_labels: list[str]
    question: str
    answer: str
    answer_type: str = "OPEN"
    content_type: str = ""
    required_view: str = "any"
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The metric-facing dict (no pixels)."""
        return {"qid": self.qid, "split": self.split, "study_id": self.study_id, "question": self.question,
                "answer": self.answer, "answer_type": self.answer_type, "content_type": self.content_type,
                "required_view": self.required_view, **self.extra}


def examples_from_store(store: StudyStore, qa_records: Sequence[dict[str, Any]],
                        split: str | None = None) -> list[VQAExample]:
    """Examples for ``qa.json`` records whose ``img_name`` / ``study_id`` is a store row."""
    row_of = {row["study_id"]: i for i, row in enumerate(store.rows)}
    examples = []
    for record in qa_records:
        if split is not None and record["split"] != split:
            continue
        index = row_of.get(record.get("study_id") or record["img_name"])
        if index is None:
            raise KeyError(f"question {record['qid']} refers to unknown study {record['img_name']!r}")
        views, labels = store.views(index)
        extra = {k: record[k] for k in ("term", "terms", "findings_terms") if k in record}
        examples.append(VQAExample(str(record["qid"]), record["split"], store.rows[index]["study_id"], views, labels,
                                   record["question"], str(record["answer"]).lower(), record["answer_type"],
                                   record.get("content_type", ""), record.get("required_view", "any"), extra))
    return examples


def load_view(path: Path, size: int, cache: dict[Path, np.ndarray]) -> np.ndarray:
    """A DICOM / PNG / JPEG file as a uint8 model input (cached per path)."""
    from mvcm_core.data.study import read_file

    if path not in cache:
        record = read_file(path)
        if not record.ok:
            raise ValueError(f"{path.name}: {record.reason}")
        cache[path] = view_to_input(record.image.display, size)
    return cache[path]


def examples_from_records(records: Sequence[Any], size: int) -> list[VQAExample]:
    """Examples for reader records (``image_paths``, ``views``, ``question``, ``answer``, ...)."""
    cache: dict[Path, np.ndarray] = {}
    examples = []
    for record in records:
        views = [load_view(Path(p), size, cache) for p in record.image_paths]
        examples.append(VQAExample(f"{record.dataset}:{record.split}:{record.qid}", record.split,
                                   record.study_id or str(record.image_paths[0]), views, list(record.views),
                                   record.question, record.answer, record.answer_type, record.question_type))
    return examples


class VQADataset(Dataset):
    """Examples with their answer index (-100 when the answer is outside the vocabulary)."""

    def __init__(self, examples: Sequence[VQAExample], answers: Sequence[str]) -> None:
        self.examples = list(examples)
        self.index = {answer: i for i, answer in enumerate(answers)}

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, position: int) -> tuple[VQAExample, int]:
        example = self.examples[position]
        return example, self.index.get(example.answer, -100)


class VQACollator:
    """(example, answer index) pairs → batch dict; ``views`` keeps both views or only one of them."""

    def __init__(self, cfg: ModelCfg, tokenizer: Any, views: str = "both", max_length: int = 32) -> None:
        if views not in VIEW_CHOICES:
            raise ValueError(f"views must be one of {VIEW_CHOICES}, got {views!r}")
        self.cfg, self.tokenizer, self.views, self.max_length = cfg, tokenizer, views, max_length

    def keep(self, labels: list[str]) -> list[bool]:
        """Which views this ablation keeps."""
        from mvcm_core.config import VIEW_OF_LABEL

        if self.views == "both":
            return [True] * len(labels)
        return [VIEW_OF_LABEL.get(label, "unknown") == self.views for label in labels]

    def __call__(self, items: Sequence[tuple[VQAExample, int]]) -> dict[str, Any]:
        views, labels, rows = [], [], {}
        for example, _ in items:  # each distinct study once, in first-seen order
            if example.study_id in rows:
                continue
            rows[example.study_id] = len(views)
            kept = self.keep(example.view_labels)
            views.append([v for v, k in zip(example.views, kept) if k])
            labels.append([label for label, k in zip(example.view_labels, kept) if k])
        batch: dict[str, Any] = image_batch(views, labels, self.cfg)
        batch["study_index"] = torch.tensor([rows[example.study_id] for example, _ in items], dtype=torch.long)
        encoded = self.tokenizer([example.question for example, _ in items], padding="longest", truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
        batch["input_ids"], batch["attention_mask"] = encoded["input_ids"], encoded["attention_mask"]
        batch["answer_index"] = torch.tensor([index for _, index in items], dtype=torch.long)
        batch["qids"] = [example.qid for example, _ in items]
        batch["content_types"] = [example.content_type for example, _ in items]
        batch["terms"] = [example.extra.get("term") for example, _ in items]  # the finding asked about, if known
        return batch


class StudyGroupedSampler(Sampler[list[int]]):
    """Batches of whole studies (all their questions together), studies shuffled per epoch."""

    def __init__(self, examples: Sequence[VQAExample], questions_per_batch: int, *, shuffle: bool = True,
                 seed: int = 0) -> None:
        self.groups: dict[str, list[int]] = {}
        for position, example in enumerate(examples):
            self.groups.setdefault(example.study_id, []).append(position)
        self.questions_per_batch, self.shuffle, self.seed, self.epoch = questions_per_batch, shuffle, seed, 0

    def _batches(self) -> list[list[int]]:
        studies = list(self.groups)
        if self.shuffle:
            order = torch.randperm(len(studies), generator=torch.Generator().manual_seed(self.seed * 7919 + self.epoch))
            studies = [studies[i] for i in order.tolist()]
        batches, current = [], []
        for study in studies:
            current.extend(self.groups[study])
            if len(current) >= self.questions_per_batch:
                batches.append(current)
                current = []
        if current:
            batches.append(current)
        return batches

    def __len__(self) -> int:
        return len(self._batches())

    def __iter__(self):  # noqa: ANN204 - Iterator[list[int]]
        batches = self._batches()
        self.epoch += 1
        return iter(batches)
