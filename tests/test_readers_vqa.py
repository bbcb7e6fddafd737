"""PathVQA, VQA-Med-2019 and mvcm-qa readers on tiny fixtures in their exact native layouts (no network)."""

from __future__ import annotations

import json
import pickle
from collections import OrderedDict
from pathlib import Path

import pytest

from mvcm_core.data.readers import (
    ReaderError,
    ReaderWarning,
    ReadStats,
    VQARecord,
    normalize_answer,
    read_dataset,
)
from test_readers import write_image, write_json  # the shared fixture writers


# --------------------------------------------------------------------------------------- fixtures
def make_pathvqa(root: Path) -> Path:
    """pvqa/: qas/train_vqa.pkl (LXMERT style), qas/val/val_qa.pkl, qas/test/test_qa.pkl, images/."""
    for split, count in (("train", 2), ("val", 1), ("test", 1)):
        for index in range(count):
            write_image(root / "images" / split / f"{split}_{index:04d}.jpg")
    train_vqa = [
        {
            "answer_type": "yes/no",
            "img_id": "train_0000",
            "label": {"yes": 1},
            "question_id": 100000,
            "question_type": "is",
            "sent": "Is the tissue inflamed?",
        },
        {
            "answer_type": "other",
            "img_id": "train_0001",
            "label": {"neutrophils": 1},
            "question_id": 100001,
            "question_type": "what",
            "sent": "What have lost their nuclei?",
        },
        {
            "answer_type": "other",
            "img_id": "train_0001",
            "label": {},
            "question_id": 100002,
            "question_type": "what",
            "sent": "What is shown?",
        },  # malformed: empty label
    ]
    (root / "qas" / "val").mkdir(parents=True)
    (root / "qas" / "test").mkdir(parents=True)
    (root / "qas" / "train_vqa.pkl").write_bytes(pickle.dumps(train_vqa))
    val = [{"image": "val_0000", "question": "Does this image show fibrosis?", "answer": "no"}]
    (root / "qas" / "val" / "val_qa.pkl").write_bytes(pickle.dumps(val))
    test = [
        {"image": "test_0000", "question": "What are the cells?", "answer": "Macrophages"},
        {"image": "test_0009", "question": "Is this a kidney?", "answer": "yes"},
    ]  # missing image
    (root / "qas" / "test" / "test_qa.pkl").write_bytes(pickle.dumps(test))
    return root


def make_vqa_med_2019(root: Path) -> Path:
    """The three ImageCLEF folders: per-category train files, All_QA_Pairs val, test with categories."""
    train = root / "ImageClef-2019-VQA-Med-Training"
    lines = {
        "C1_Modality": [
            "synpic100|what modality was used to take this image?|ct w/contrast (iv)",
            "synpic101|is this an mri?|yes",
        ],
        "C2_Plane": ["synpic100|which plane is the image shown in?|axial"],
        "C3_Organ": ["synpic100|what organ system is shown in this image?|Gastrointestinal"],
        "C4_Abnormality": [
            "synpic101|what is abnormal in the mri?|meningioma",
            "synpic101|this line is malformed",
        ],
    }
    for stem, rows in lines.items():
        path = train / "QAPairsByCategory" / f"{stem}_train.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    for name in ("synpic100", "synpic101"):
        write_image(train / "Train_images" / f"{name}.jpg")
    val = root / "ImageClef-2019-VQA-Med-Validation"
    val.mkdir()
    (val / "All_QA_Pairs_val.txt").write_text(
        "synpic200|in what plane was this image taken?|sagittal\nsynpic201|is this a ct?|no\n",
        encoding="utf-8",
    )
    write_image(val / "Val_images" / "synpic200.jpg")  # synpic201 image missing
    test = root / "VQAMed2019Test"
    test.mkdir()
    (test / "VQAMed2019_Test_Questions_w_Ref_Answers.txt").write_text(
        "synpic300|modality|what kind of image is this?|us\n"
        "synpic300|abnormality|what is the primary abnormality in this image?|ovarian torsion\n",
        encoding="utf-8",
    )
    write_image(test / "VQAMed2019_Test_Images" / "synpic300.jpg")
    return root


def make_mvcm_qa(root: Path) -> Path:
    """Simulated studies: study folders with PA/LL as DICOM + PNG, and qa.json."""
    for study in ("sim_0001", "sim_0002"):
        folder = root / study
        write_image(folder / "PA.png")
        write_image(folder / "LL.png")
        (folder / "PA.dcm").write_bytes(b"\0" * 128 + b"DICM")
        (folder / "LL.dcm").write_bytes(b"\0" * 128 + b"DICM")
        write_json(folder / "findings.json", {"findings": []})  # not a view: ignored

    def row(qid: str, study: str, question: str, answer: str, split: str, **more: str) -> dict:
        return {
            "qid": qid,
            "img_name": study,
            "study_id": study.upper(),
            "question": question,
            "answer": answer,
            "answer_type": "CLOSED" if answer in ("yes", "no") else "OPEN",
            "content_type": "presence",
            "q_lang": "en",
            "required_view": "lateral",
            "split": split,
            **more,
        }

    write_json(
        root / "qa.json",
        [
            row("q1", "sim_0001", "Is there a pleural effusion?", "yes", "train"),
            row(
                "q2", "sim_0001", "Which side is the effusion on?", "Right", "train", required_view="frontal"
            ),
            row("q3", "sim_0002", "Is the study normal?", "no", "validate"),
            row("q4", "sim_0002", "Is the study normal?", "no", "test", q_lang="zh"),
            row("q5", "sim_9999", "Is there a pneumothorax?", "no", "test"),  # missing study folder
            row("q6", "sim_0002", "Is there cardiomegaly?", "no", "holdout"),  # malformed split
        ],
    )
    return root


FIXTURES = {
    "pathvqa": make_pathvqa,
    "vqa-med-2019": make_vqa_med_2019,
    "mvcm-qa": make_mvcm_qa,
}


# ---------------------------------------------------------------------------------------- PathVQA
def test_pathvqa_reads_released_pickles(tmp_path: Path) -> None:
    root = make_pathvqa(tmp_path / "pvqa")
    stats = ReadStats("pathvqa")
    with pytest.warns(ReaderWarning):
        records = read_dataset("pathvqa", root, stats=stats)
    assert stats.skipped == {"malformed row": 1, "missing image": 1}
    assert [(r.split, r.answer) for r in records] == [
        ("train", "yes"),
        ("train", "neutrophils"),
        ("val", "no"),
        ("test", "macrophages"),
    ]
    train_yes, train_open = records[0], records[1]
    assert train_yes.answer_type == "CLOSED" and train_yes.extra["answer_type_source"] == "dataset"
    assert (
        train_open.answer_type == "OPEN" and train_open.question_type == "what" and train_open.qid == "100001"
    )
    assert records[2].answer_type == "CLOSED" and records[2].extra["answer_type_source"] == "yes/no"
    assert records[3].image_paths[0] == root / "images" / "test" / "test_0000.jpg"


def test_pathvqa_json_variant_and_unsafe_pickle(tmp_path: Path) -> None:
    root = tmp_path / "pathvqa"
    write_image(root / "images" / "train_0000.jpg")
    write_json(root / "train.json", [{"image_name": "train_0000.jpg", "question": "Is it?", "answer": "Yes"}])
    records = read_dataset("pathvqa", root, split="train")
    assert records[0].image_paths[0] == root / "images" / "train_0000.jpg" and records[0].answer == "yes"
    (root / "qas").mkdir()
    (root / "qas" / "train_vqa.pkl").write_bytes(pickle.dumps([OrderedDict(img_id="train_0000")]))
    with pytest.raises(ReaderError, match="refusing to load class"):
        read_dataset("pathvqa", root, split="train")


# ----------------------------------------------------------------------------------- VQA-Med-2019
def test_vqa_med_2019_reads_imageclef_layout(tmp_path: Path) -> None:
    root = make_vqa_med_2019(tmp_path / "vqamed")
    stats = ReadStats("vqa-med-2019")
    with pytest.warns(ReaderWarning):
        records = read_dataset("vqa-med-2019", root, stats=stats)
    assert stats.skipped == {"malformed row": 1, "missing image": 1}
    assert [(r.split, r.question_type) for r in records] == [
        ("train", "modality"),
        ("train", "modality"),
        ("train", "plane"),
        ("train", "organ"),
        ("train", "abnormality"),
        ("val", ""),
        ("test", "modality"),
        ("test", "abnormality"),
    ]
    assert records[0].answer == "ct w/contrast (iv)" and records[0].study_id == "synpic100"
    assert records[1].answer_type == "CLOSED" and records[3].answer == "gastrointestinal"
    assert records[-1].answer == "ovarian torsion" and records[-1].answer_type == "OPEN"
    assert len({r.qid for r in records}) == len(records)


@pytest.mark.filterwarnings("ignore::mvcm_core.data.readers.ReaderWarning")
def test_vqa_med_2019_category_filter(tmp_path: Path) -> None:
    root = make_vqa_med_2019(tmp_path / "vqamed")
    stats = ReadStats("vqa-med-2019")
    kept = read_dataset("vqa-med-2019", root, "train", categories=("modality", "plane", "organ"), stats=stats)
    assert {r.question_type for r in kept} == {"modality", "plane", "organ"} and len(kept) == 4
    assert stats.filtered == {"category abnormality": 1}
    with pytest.raises(ReaderError, match="QAPairsByCategory"):
        read_dataset("vqa-med-2019", root, "val", categories=("plane",))
    with pytest.raises(ReaderError, match="missing VQA-Med-2019 test folder"):
        read_dataset("vqa-med-2019", tmp_path / "vqamed" / "ImageClef-2019-VQA-Med-Training", "test")


# ---------------------------------------------------------------------------------------- mvcm-qa
@pytest.mark.filterwarnings("ignore::mvcm_core.data.readers.ReaderWarning")
def test_mvcm_qa_groups_views_of_a_study(tmp_path: Path) -> None:
    root = make_mvcm_qa(tmp_path / "sim")
    stats = ReadStats("mvcm-qa")
    with pytest.warns(ReaderWarning):
        records = read_dataset("mvcm-qa", root, stats=stats)
    assert [(r.qid, r.split) for r in records] == [("q1", "train"), ("q2", "train"), ("q3", "val")]
    assert stats.filtered == {"q_lang != en": 1}
    assert stats.skipped == {"missing image": 1, "malformed row": 1}
    first = records[0]
    assert first.views == ("PA", "LATERAL") and [p.name for p in first.image_paths] == ["PA.dcm", "LL.dcm"]
    assert first.study_id == "SIM_0001" and first.extra["required_view"] == "lateral"
    assert records[1].answer == "right" and records[1].extra["required_view"] == "frontal"
    png = read_dataset("mvcm-qa", root, split="val", prefer=(".png",))
    assert [p.name for p in png[0].image_paths] == ["PA.png", "LL.png"]


@pytest.mark.filterwarnings("ignore::mvcm_core.data.readers.ReaderWarning")
@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_registry_reads_every_fixture(name: str, tmp_path: Path) -> None:
    records = read_dataset(name, FIXTURES[name](tmp_path / name))
    assert records and all(isinstance(r, VQARecord) and r.dataset == name for r in records)
    assert all(r.answer == normalize_answer(r.answer_raw) for r in records)
