"""Study <-> report retrieval pairs per split, with duplicate report texts grouped.

Many Open-I reports share the same text ("The heart is normal in size. The lungs are clear."), so
instance Recall@K must count every study with an identical (normalised) report as a correct hit:
each pair carries a ``group_id`` shared by all pairs of its split whose normalised text is equal.
Each pair also carries a multi-hot label vector over :data:`CANONICAL_TERMS` for label-based
Precision@K.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mvcm_core.data.findings import CANONICAL_TERMS, Finding
from mvcm_core.data.openi import OpenIReport

_NON_WORD = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class RetrievalPair:
    """One study and its report.

    Attributes:
        study_id: the study folder name (image side of the pair).
        uid: the report id.
        split: ``train``, ``val`` or ``test``.
        text: the report text, verbatim (FINDINGS then IMPRESSION).
        group_id: index of the duplicate-text group within the split (0, 1, ... in study order).
        labels: multi-hot over :data:`CANONICAL_TERMS` (tuple of 0/1).
        fully_mapped: every MeSH major of the report mapped, so absent labels mean absent findings.
    """

    study_id: str
    uid: str
    split: str
    text: str
    group_id: int
    labels: tuple[int, ...]
    fully_mapped: bool


def report_text(report: OpenIReport) -> str:
    """The retrieval text of a report: FINDINGS then IMPRESSION, verbatim, space-joined."""
    return " ".join(part for part in (report.findings_text.strip(), report.impression.strip()) if part)


def normalise_report_text(text: str) -> str:
    """Lower-case, punctuation-free, single-spaced text: the key that groups duplicate reports."""
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def label_vector(findings: Iterable[Finding]) -> np.ndarray:
    """Multi-hot ``(len(CANONICAL_TERMS),)`` uint8 vector of the findings' terms."""
    vector = np.zeros(len(CANONICAL_TERMS), dtype=np.uint8)
    for finding in findings:
        vector[CANONICAL_TERMS.index(finding.term)] = 1
    return vector


def build_retrieval_pairs(reports: Iterable[OpenIReport]) -> dict[str, list[RetrievalPair]]:
    """Group reports by split into study <-> report pairs, sorted by study id.

    Returns:
        ``split -> pairs``; within a split, pairs with the same normalised text share ``group_id``.
    """
    by_split: dict[str, list[OpenIReport]] = defaultdict(list)
    for report in reports:
        by_split[report.split].append(report)
    pairs: dict[str, list[RetrievalPair]] = {}
    for split, split_reports in sorted(by_split.items()):
        groups: dict[str, int] = {}
        pairs[split] = []
        for report in sorted(split_reports, key=lambda r: r.study_id):
            text = report_text(report)
            group = groups.setdefault(normalise_report_text(text), len(groups))
            labels = tuple(int(v) for v in label_vector(report.findings))
            pairs[split].append(
                RetrievalPair(report.study_id, report.uid, split, text, group, labels, report.fully_mapped)
            )
    return pairs


def label_matrix(pairs: Sequence[RetrievalPair]) -> np.ndarray:
    """Stack the label vectors: ``(N, len(CANONICAL_TERMS))`` uint8."""
    return np.asarray([p.labels for p in pairs], dtype=np.uint8).reshape(len(pairs), len(CANONICAL_TERMS))


def duplicate_summary(pairs: dict[str, list[RetrievalPair]]) -> dict[str, dict[str, int]]:
    """Per split: pairs, distinct texts, and pairs whose text is shared with another study."""
    summary = {}
    for split, split_pairs in pairs.items():
        sizes = np.bincount([p.group_id for p in split_pairs]) if split_pairs else np.zeros(0, dtype=int)
        summary[split] = {
            "pairs": len(split_pairs),
            "distinct_texts": int(len(sizes)),
            "pairs_in_duplicate_groups": int(sizes[sizes > 1].sum()),
        }
    return summary


def write_retrieval_json(pairs: dict[str, list[RetrievalPair]], path: str | Path) -> Path:
    """Write ``{"terms": [...], "<split>": [pair, ...]}`` as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"terms": list(CANONICAL_TERMS)}
    payload.update({split: [asdict(p) for p in split_pairs] for split, split_pairs in pairs.items()})
    path.write_text(json.dumps(payload, ensure_ascii=False) + "\n")
    return path
