"""VQA metrics on hand-made records with answers worked out by hand."""

from __future__ import annotations

import pytest

from mvcm_core.eval.vqa_metrics import (
    MISSING,
    majority_baselines,
    normalise_answer,
    out_of_vocabulary,
    top_confusions,
    vqa_accuracy,
)


def rec(qid, answer, answer_type, content_type="presence", view="any", question="", **extra):
    return {
        "qid": qid,
        "answer": answer,
        "answer_type": answer_type,
        "content_type": content_type,
        "required_view": view,
        "question": question or f"question {qid}",
        **extra,
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  The Left  Lower Lobe. ", "left lower lobe"),
        ("Yes!", "yes"),
        ("yes", "yes"),
        ("An effusion", "effusion"),
        ("1.5 cm.", "1.5 cm"),
        ("x-ray, PA", "x-ray pa"),
        ("left/right?", "left/right"),
        ("theatre", "theatre"),  # "the" only as a whole word
        ("  ", ""),
        (None, ""),
    ],
)
def test_normalise_answer(raw, expected):
    assert normalise_answer(raw) == expected


# the two closed conventions disagree on qid 2 (CLOSED but "left") and qid 3 (OPEN but "no")
RECORDS = [
    rec(1, "yes", "CLOSED", "presence", "any", term="pleural effusion"),
    rec(2, "left", "CLOSED", "laterality", "frontal", term="pleural effusion"),
    rec(3, "no", "OPEN", "normality", "any"),
    rec(4, "pleural effusion", "OPEN", "abnormality", "lateral",
        findings_terms=["pleural effusion", "edema"]),
    rec(5, "right", "OPEN", "laterality", "frontal", term="pneumothorax"),
]
PREDICTIONS = {"1": "Yes.", 2: "left", 3: "yes", 5: "left"}  # qid 4 missing; "1" as a JSON string key


def test_vqa_accuracy_both_conventions():
    m = vqa_accuracy(RECORDS, PREDICTIONS)
    assert m["n"] == 5 and m["missing"] == 1 and m["extra_predictions"] == 0
    assert m["overall"] == {"accuracy": 0.4, "correct": 2, "n": 5}
    dataset, yes_no = m["conventions"]["dataset"], m["conventions"]["yes_no"]
    assert dataset["closed"] == {"accuracy": 1.0, "correct": 2, "n": 2}  # qids 1, 2
    assert dataset["open"] == {"accuracy": 0.0, "correct": 0, "n": 3}  # qids 3, 4, 5
    assert yes_no["closed"] == {"accuracy": 0.5, "correct": 1, "n": 2}  # qids 1, 3
    assert yes_no["open"] == {"accuracy": 1 / 3, "correct": 1, "n": 3}  # qids 2, 4, 5
    assert dataset["overall"] == yes_no["overall"] == m["overall"]


def test_vqa_accuracy_breakdowns():
    m = vqa_accuracy(RECORDS, PREDICTIONS)
    assert m["by_content_type"]["laterality"] == {"accuracy": 0.5, "correct": 1, "n": 2}
    assert m["by_content_type"]["normality"]["correct"] == 0
    assert m["by_required_view"]["frontal"] == {"accuracy": 0.5, "correct": 1, "n": 2}
    assert m["by_required_view"]["lateral"]["n"] == 1
    # qid 4 counts under both of its findings; qid 3 has none
    assert m["by_finding"]["pleural effusion"] == {"accuracy": 2 / 3, "correct": 2, "n": 3}
    assert m["by_finding"]["edema"] == {"accuracy": 0.0, "correct": 0, "n": 1}
    assert m["by_finding"]["pneumothorax"]["correct"] == 0
    assert set(m["by_finding"]) == {"pleural effusion", "edema", "pneumothorax"}


def test_missing_empty_and_extra_predictions_are_counted():
    m = vqa_accuracy(RECORDS, {1: "", 2: None, 99: "yes"})
    assert m["overall"]["correct"] == 0 and m["missing"] == 5 and m["extra_predictions"] == 1
    # an empty prediction never matches an answer that normalises to empty
    assert vqa_accuracy([rec(1, "the", "OPEN")], {1: ""})["overall"]["correct"] == 0


def test_empty_group_accuracy_is_none():
    m = vqa_accuracy([rec(1, "yes", "CLOSED")], {1: "yes"})
    assert m["conventions"]["dataset"]["open"] == {"accuracy": None, "correct": 0, "n": 0}


def test_bad_records_raise():
    with pytest.raises(ValueError, match="duplicate qid"):
        vqa_accuracy([rec(1, "yes", "CLOSED"), rec("1", "no", "CLOSED")], {})
    with pytest.raises(ValueError, match="answer_type"):
        vqa_accuracy([rec(1, "yes", "BINARY")], {})


TRAIN = [
    rec(1, "yes", "CLOSED", "presence", question="Is there an effusion?"),
    rec(2, "yes", "CLOSED", "presence", question="Is there an effusion?"),
    rec(3, "no", "CLOSED", "presence", question="Is there a mass?"),
    rec(4, "no", "CLOSED", "presence", question="Is there a mass?"),
    rec(5, "no", "CLOSED", "normality", question="Is this normal?"),
    rec(6, "left", "OPEN", "laterality", question="Which side?"),
    rec(7, "left", "OPEN", "laterality", question="Which side?"),
    rec(8, "right", "OPEN", "laterality", question="Which side is the mass?"),
]
EVAL = [
    rec(11, "yes", "CLOSED", "presence", question="Is there an effusion?"),
    rec(12, "no", "CLOSED", "presence", question="Is there a mass?"),
    rec(13, "yes", "CLOSED", "normality", question="Is this normal?"),
    rec(14, "right", "OPEN", "laterality", question="Which side is the mass?"),
    rec(15, "large", "OPEN", "severity", question="How big?"),
]


def test_majority_baselines():
    b = majority_baselines(TRAIN, EVAL)
    # global: "no" (3) beats "yes" (2) and "left" (2): right on 12 only
    assert b["global_majority"]["answer"] == "no"
    assert b["global_majority"]["metrics"]["overall"]["correct"] == 1
    # per type: presence tie yes/no -> "no" (alphabetical), normality "no", laterality "left",
    # severity unseen -> global "no": right on 12 only
    assert b["type_majority"]["metrics"]["overall"]["correct"] == 1
    # closed: train closed answers are 2 yes / 3 no -> always "no"; open majority "left"
    assert b["closed_constant"]["answer"] == {"CLOSED": "no", "OPEN": "left"}
    assert b["closed_constant"]["metrics"]["conventions"]["dataset"]["closed"]["correct"] == 1
    # per question text: right on 11, 12 and 14; 13 ("no") and 15 (unseen type -> "no") wrong
    assert b["question_majority"]["metrics"]["overall"]["correct"] == 3
    for baseline in b.values():
        assert baseline["metrics"]["n"] == len(EVAL) and baseline["description"]


def test_majority_baselines_need_train():
    with pytest.raises(ValueError):
        majority_baselines([], EVAL)


def test_top_confusions_counts_order_and_example():
    records = [
        rec(1, "left", "OPEN", "laterality", question="first"),
        rec(2, "left", "OPEN", "laterality", question="second"),
        rec(3, "yes", "CLOSED", "presence"),
        rec(4, "right", "OPEN", "laterality"),
        rec(5, "no", "CLOSED", "presence"),
    ]
    preds = {1: "right", 2: "Right.", 3: "no", 4: "right"}
    conf = top_confusions(records, preds, k=10)
    assert conf[0] == {
        "content_type": "laterality",
        "answer": "left",
        "prediction": "right",
        "count": 2,
        "share_of_errors": 0.5,
        "example_qid": 1,
        "example_question": "first",
    }
    assert [(c["answer"], c["prediction"]) for c in conf[1:]] == [("no", MISSING), ("yes", "no")]
    assert len(top_confusions(records, preds, k=1)) == 1
    assert top_confusions(records[:1], {1: "left"}) == []


def test_out_of_vocabulary():
    oov = out_of_vocabulary(EVAL, vocabulary=["Yes", "no", "left", "right"])
    assert oov["overall"] == {"n": 5, "oov": 1, "share": 0.2, "max_accuracy": 0.8}
    assert oov["OPEN"]["oov"] == 1 and oov["OPEN"]["n"] == 2
    assert oov["CLOSED"] == {"n": 3, "oov": 0, "share": 0.0, "max_accuracy": 1.0}
