"""VQA generation from structured findings: balance, view rules, determinism, train-only vocabulary."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mvcm_core.data.findings import CANONICAL_TERMS, Finding
from mvcm_core.data.vqa_gen import (
    QUESTION_TYPES,
    build_answer_vocab,
    generate_vqa,
    out_of_vocab,
    required_view,
    write_qa_json,
)
from mvcm_core.data.vqa_phrases import SALIENCE, TERM_PHRASES

SLAKE_KEYS = {
    "qid",
    "img_name",
    "study_id",
    "question",
    "answer",
    "answer_type",
    "content_type",
    "q_lang",
    "required_view",
    "split",
}


@dataclass
class Study:
    study_id: str
    split: str
    findings: list[Finding]
    unmapped_mesh: list[str] = field(default_factory=list)

    @property
    def fully_mapped(self) -> bool:
        return bool(self.findings) and not self.unmapped_mesh


def corpus() -> list[Study]:
    normal = [Study(f"N{i:02d}", "train", [Finding("normal")]) for i in range(8)]
    return normal + [
        Study("E1", "train", [Finding("pleural effusion", side="right", severity="small")]),
        Study(
            "E2",
            "train",
            [
                Finding("pleural effusion", side="left", severity="large"),
                Finding("cardiomegaly", severity="moderate"),
            ],
        ),
        Study(
            "O1",
            "train",
            [Finding("opacity", side="left", lobe="lower"), Finding("opacity", side="right", lobe="lower")],
        ),
        Study("R1", "train", [Finding("atelectasis", zone="retrocardiac")]),
        Study("U1", "train", [], unmapped_mesh=["Frobnication"]),
        Study("U2", "train", [Finding("nodule", side="right", lobe="upper")], unmapped_mesh=["Frobnication"]),
        Study("T1", "test", [Finding("pneumothorax", side="left", zone="apex", severity="small")]),
        Study("T2", "test", [Finding("normal")]),
    ]


def test_records_are_slake_style_and_typed():
    records = generate_vqa(corpus())
    assert records and all(set(r) - {"term"} == SLAKE_KEYS for r in records)
    # every finding-specific question names its finding (per-finding accuracy)
    assert all(r["term"] in CANONICAL_TERMS for r in records if r["content_type"] in ("presence", "laterality"))
    assert [r["qid"] for r in records] == list(range(len(records)))
    for r in records:
        assert r["answer_type"] == ("CLOSED" if r["answer"] in ("yes", "no") else "OPEN")
        assert r["content_type"] in QUESTION_TYPES and r["q_lang"] == "en" and r["img_name"] == r["study_id"]
    assert {r["content_type"] for r in records} == set(QUESTION_TYPES) - {"depth", "localisation"}  # need placements


def test_generation_is_deterministic_and_seeded():
    studies = corpus()
    assert generate_vqa(studies, seed=3) == generate_vqa(list(reversed(studies)), seed=3)
    assert generate_vqa(studies, seed=3) != generate_vqa(studies, seed=4)


def test_presence_is_balanced_per_finding_and_negatives_are_fully_mapped():
    records = [r for r in generate_vqa(corpus()) if r["content_type"] == "presence"]
    for term, phrase in TERM_PHRASES.items():
        answers = Counter((r["split"], r["answer"]) for r in records if phrase in r["question"])
        for split in ("train", "test"):
            assert answers[(split, "yes")] == answers[(split, "no")], (term, split, answers)
    assert (
        Counter(r["answer"] for r in records if r["split"] == "train")["yes"] == 6
    )  # effusion x2, cardiomegaly, opacity, atelectasis, nodule
    assert not any(r["answer"] == "no" and r["study_id"] in ("U1", "U2") for r in records)
    nodule_yes = [r for r in records if r["study_id"] == "U2" and r["answer"] == "yes"]
    assert len(nodule_yes) == 1  # a partly unmapped study still yields its known positive


def test_normality_and_most_salient_abnormality():
    records = generate_vqa(corpus())
    normality = {r["study_id"]: r["answer"] for r in records if r["content_type"] == "normality"}
    assert normality["N00"] == "yes" and normality["E2"] == "no" and "U1" not in normality
    abnormality = {r["study_id"]: r["answer"] for r in records if r["content_type"] == "abnormality"}
    assert abnormality["E2"] == "pleural effusion" and abnormality["T1"] == "pneumothorax"


def test_laterality_location_and_severity_answers():
    records = generate_vqa(corpus())
    about = {(r["study_id"], r["content_type"], r["answer"]) for r in records}
    assert ("E2", "severity", "large") in about and ("E2", "severity", "moderate") in about
    assert ("O1", "laterality", "bilateral") in about  # left and right lower-lobe opacities
    assert ("O1", "location", "lower") in about and not any(
        k[:2] == ("O1", "location") and k[2] != "lower" for k in about
    )
    assert ("T1", "location", "left apex") in about and ("R1", "location", "retrocardiac") in about


def test_required_view_rule():
    small_effusion = Finding("pleural effusion", side="right", severity="small")
    assert required_view(small_effusion, "presence", "yes") == "lateral"
    assert required_view(Finding("atelectasis", zone="retrocardiac"), "presence", "yes") == "lateral"
    assert (
        required_view(Finding("opacity", side="left", lobe="lower"), "location", "left lower lobe")
        == "frontal"
    )
    assert required_view(Finding("cardiomegaly"), "presence", "yes") == "any"
    assert (
        required_view(Finding("atelectasis", side="bilateral", zone="base"), "location", "bilateral base")
        == "frontal"
    )
    records = generate_vqa(corpus())
    assert all(r["required_view"] == "frontal" for r in records if r["content_type"] == "laterality")
    assert all(r["required_view"] == "lateral" for r in records if r["content_type"] == "view")
    recess = {r["study_id"]: r["answer"] for r in records if "costophrenic recess" in r["question"]}
    assert recess["E1"] == "yes" and "no" in recess.values()


def test_answer_vocab_is_built_from_train_only():
    records = generate_vqa(corpus())
    vocab = build_answer_vocab(records)
    assert "pneumothorax" not in vocab and {"yes", "no", "pleural effusion"} <= set(vocab)
    oov = out_of_vocab(records, vocab)
    assert oov["train"]["oov"] == 0 and oov["test"]["oov"] >= 1
    with pytest.raises(ValueError, match="train only"):
        build_answer_vocab([r for r in records if r["split"] == "test"])


def test_every_abnormal_term_is_ranked_and_phrased():
    assert set(SALIENCE) == set(CANONICAL_TERMS) - {"normal"} and len(SALIENCE) == len(set(SALIENCE))
    assert set(TERM_PHRASES) == set(SALIENCE)


def test_write_qa_json_round_trips(tmp_path: Path):
    records = generate_vqa(corpus())
    path = write_qa_json(records, tmp_path / "out" / "qa.json")
    assert json.loads(path.read_text()) == records


def test_findings_finer_than_two_pixels_get_no_question_at_that_size():
    from mvcm_core.data.phantom.visibility import min_image_size, resolved_at

    assert min_image_size("calcified granuloma") == 215 and min_image_size("pleural effusion") == 0
    assert not resolved_at("calcified granuloma", 128) and resolved_at("calcified granuloma", 256)
    studies = corpus() + [
        Study("G1", "train", [Finding("calcified granuloma", side="right")]),
        Study("G2", "train", [Finding("calcified granuloma", side="left"), Finding("cardiomegaly")]),
        Study("G3", "train", [Finding("degenerative spine")]),
    ]
    at_128 = generate_vqa(studies, image_size=128)
    full = generate_vqa(studies)
    assert any(r.get("term") == "calcified granuloma" for r in full)
    assert not any(r.get("term") in ("calcified granuloma", "degenerative spine") for r in at_128)
    by_study = {s: [r for r in at_128 if r["study_id"] == s] for s in ("G1", "G2", "G3")}
    for hidden_only in ("G1", "G3"):  # nothing visible: not even "is this study normal?", only "no" elsewhere
        assert all(r["content_type"] in ("presence", "view") and r["answer"] == "no" for r in by_study[hidden_only])
    normality = [r for r in by_study["G2"] if r["content_type"] == "normality"]
    abnormality = [r for r in by_study["G2"] if r["content_type"] == "abnormality"]
    assert normality[0]["answer"] == "no" and abnormality[0]["answer"] == "cardiomegaly"
    assert generate_vqa(corpus(), image_size=128) == generate_vqa(corpus())  # only those findings change


@dataclass
class PlacedStudy(Study):
    depths: list[dict] = field(default_factory=list)


def test_depth_questions_come_from_the_placements_and_need_the_lateral():
    def placed(study_id: str, depths: list[tuple[str, float]]) -> PlacedStudy:
        findings = [Finding(term, side="left") for term in dict.fromkeys(t for t, _ in depths)]
        return PlacedStudy(study_id, "train", findings, depths=[{"term": t, "side": "left", "depth": d}
                                                                for t, d in depths])

    studies = [placed("P1", [("opacity", 0.6)]), placed("A1", [("nodule", -0.4), ("nodule", -0.3)]),
               placed("M1", [("opacity", 0.1)]),  # near the middle: not asked
               placed("X1", [("opacity", 0.5), ("opacity", -0.5)])]  # one in front, one behind: not asked
    asked = {r["study_id"]: r for r in generate_vqa(studies, seed=0) if r["content_type"] == "depth"}
    assert set(asked) == {"P1", "A1"}
    assert asked["P1"]["answer"] == "posterior" and asked["A1"]["answer"] == "anterior"
    assert all(r["required_view"] == "lateral" and r["answer_type"] == "OPEN" for r in asked.values())
    assert "nodule" in asked["A1"]["question"] and asked["A1"]["term"] == "nodule"
    assert "depth" in QUESTION_TYPES


def test_depths_add_questions_without_changing_the_others():
    plain = corpus()
    with_depths = [PlacedStudy(s.study_id, s.split, s.findings, s.unmapped_mesh,
                               depths=[{"term": "opacity", "side": "left", "depth": 0.7}] if s.study_id == "O1" else [])
                   for s in plain]
    before = [{k: v for k, v in r.items() if k != "qid"} for r in generate_vqa(plain, seed=3)]
    after = [{k: v for k, v in r.items() if k != "qid"} for r in generate_vqa(with_depths, seed=3)]
    added = [r for r in after if r not in before]
    assert [r["content_type"] for r in added] == ["depth", "localisation"]
    assert {r["study_id"] for r in added} == {"O1"}
    assert [r for r in after if r["content_type"] not in ("depth", "localisation")] == before


def test_two_view_localisation_needs_the_side_and_the_depth():
    def placed(study_id: str, placements: list[tuple[str, str, float]]) -> PlacedStudy:
        findings = [Finding(term) for term in dict.fromkeys(t for t, _, _ in placements)]
        return PlacedStudy(study_id, "train", findings,
                           depths=[{"term": t, "side": side, "depth": d} for t, side, d in placements])

    studies = [placed("R1", [("opacity", "right", 0.6), ("opacity", "right", 0.4)]),  # one lung, behind
               placed("B1", [("nodule", "left", -0.5), ("nodule", "right", 0.5)]),  # one in each lung
               placed("B2", [("mass", "left", -0.5), ("mass", "left", 0.5), ("mass", "right", -0.4)]),
               placed("M1", [("opacity", "left", 0.1)])]  # near the middle: nothing
    asked = [r for r in generate_vqa(studies, seed=0) if r["content_type"] == "localisation"]
    by_study = {s: [(r["question"], r["answer"]) for r in asked if r["study_id"] == s] for s in ("R1", "B1", "B2", "M1")}
    assert [a for _, a in by_study["R1"]] == ["right posterior"]
    assert sorted(a for _, a in by_study["B1"]) == ["anterior", "posterior"]  # asked per lung, no overall depth
    assert ["left" in q for q, _ in by_study["B1"]] == [a == "anterior" for _, a in by_study["B1"]]
    assert by_study["B2"] == [(by_study["B2"][0][0], "anterior")] and "right" in by_study["B2"][0][0]
    assert by_study["M1"] == []
    assert all(r["required_view"] == "both" and r["answer_type"] == "OPEN" for r in asked)
    assert not any(r["content_type"] == "depth" and r["study_id"] in ("B1", "B2") for r in generate_vqa(studies))
