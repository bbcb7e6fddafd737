"""Study <-> report retrieval pairs: duplicate grouping per split and label vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mvcm_core.data.findings import CANONICAL_TERMS, Finding
from mvcm_core.data.openi import OpenIReport
from mvcm_core.data.retrieval_pairs import (
    build_retrieval_pairs,
    duplicate_summary,
    label_matrix,
    label_vector,
    normalise_report_text,
    report_text,
    write_retrieval_json,
)


def report(uid: str, split: str, findings_text: str, impression: str, terms: tuple[str, ...]) -> OpenIReport:
    return OpenIReport(
        uid=uid,
        findings_text=findings_text,
        impression=impression,
        indication="",
        comparison="",
        mesh_major=list(terms),
        mesh_automatic=[],
        findings=[Finding(t) for t in terms],
        image_ids=[f"{uid}_IM-0001-1001"],
        split=split,
        study_id=f"{uid}_IM-0001",
    )


REPORTS = [
    report("CXR3", "test", "The lungs are clear.", "No acute disease.", ("normal",)),
    report(
        "CXR1", "test", "The lungs are  clear", "No acute disease!", ("normal",)
    ),  # same text, other spacing
    report("CXR2", "test", "Right effusion.", "Effusion.", ("pleural effusion", "cardiomegaly")),
    report("CXR4", "train", "The lungs are clear.", "No acute disease.", ("normal",)),
]


def test_report_text_is_verbatim_and_normalisation_ignores_case_space_punctuation():
    assert report_text(REPORTS[0]) == "The lungs are clear. No acute disease."
    assert (
        normalise_report_text("The lungs  are CLEAR.\nNo acute disease!")
        == "the lungs are clear no acute disease"
    )


def test_duplicate_texts_share_a_group_within_their_split():
    pairs = build_retrieval_pairs(REPORTS)
    test = pairs["test"]
    assert [p.study_id for p in test] == ["CXR1_IM-0001", "CXR2_IM-0001", "CXR3_IM-0001"]
    assert [p.group_id for p in test] == [0, 1, 0]
    assert [p.group_id for p in pairs["train"]] == [0]
    assert duplicate_summary(pairs)["test"] == {
        "pairs": 3,
        "distinct_texts": 2,
        "pairs_in_duplicate_groups": 2,
    }


def test_label_vectors_are_multi_hot_over_the_canonical_terms():
    vector = label_vector(
        [Finding("pleural effusion"), Finding("cardiomegaly"), Finding("cardiomegaly", side="left")]
    )
    assert vector.dtype == np.uint8 and vector.shape == (len(CANONICAL_TERMS),)
    assert np.flatnonzero(vector).tolist() == [
        CANONICAL_TERMS.index("cardiomegaly"),
        CANONICAL_TERMS.index("pleural effusion"),
    ]
    matrix = label_matrix(build_retrieval_pairs(REPORTS)["test"])
    assert matrix.shape == (3, len(CANONICAL_TERMS)) and matrix.sum(axis=1).tolist() == [1, 2, 1]
    assert label_matrix([]).shape == (0, len(CANONICAL_TERMS))


def test_write_retrieval_json(tmp_path: Path):
    path = write_retrieval_json(build_retrieval_pairs(REPORTS), tmp_path / "retrieval.json")
    payload = json.loads(path.read_text())
    assert payload["terms"] == list(CANONICAL_TERMS) and len(payload["test"]) == 3
    assert payload["test"][1]["text"] == "Right effusion. Effusion." and payload["test"][1]["fully_mapped"]
