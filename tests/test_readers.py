"""VQA readers on tiny fixtures written in each dataset's exact native layout (no network)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from PIL import Image

from mvcm_core.data.readers import (
    READERS,
    ReaderError,
    ReaderWarning,
    ReadStats,
    VQARecord,
    normalize_answer,
    normalize_view,
    read_dataset,
)


def write_image(path: Path) -> Path:
    """A tiny grey image (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), color=128).save(path)
    return path


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------- fixtures
def make_vqa_rad(root: Path, image_folder: str = "images") -> Path:
    """MEVF ``data_RAD``: trainset.json / testset.json + images (one missing, one malformed row)."""
    for name in ("synpic54610.jpg", "synpic29265.jpg", "synpic31716.jpg"):
        write_image(root / image_folder / name)
    row = {"image_organ": "HEAD", "question_type": "PRES", "phrase_type": "freeform"}
    train = [
        {
            **row,
            "qid": 1,
            "image_name": "synpic54610.jpg",
            "answer": "Yes",
            "answer_type": "CLOSED",
            "question": "Are regions of the brain infarcted?",
        },
        {
            **row,
            "qid": 2,
            "image_name": "synpic29265.jpg",
            "image_organ": "CHEST",
            "answer": 2,
            "answer_type": "OPEN",
            "question_type": "COUNT",
            "question": "How many lesions are seen?",
        },
        {
            **row,
            "qid": 3,
            "image_name": "synpic29265.jpg",
            "answer": "Left lung.",
            "answer_type": "CLOSED ",
            "question_type": "POS",
            "question": "Which lung is affected, left or right?",
            "phrase_type": "para",
        },
        {
            **row,
            "qid": 4,
            "image_name": "synpic00000.jpg",
            "answer": "No",
            "answer_type": "CLOSED",
            "question": "Is there a fracture?",
        },
        {"qid": 5, "image_name": "synpic54610.jpg", "answer": "yes"},  # malformed: no question
    ]
    test = [
        {
            **row,
            "qid": 0,
            "image_name": "synpic31716.jpg",
            "answer": "no",
            "answer_type": "closed",
            "question": "Is this a CT?",
            "phrase_type": "test_freeform",
        },
        {
            **row,
            "qid": 10,
            "image_name": "synpic54610.jpg",
            "answer": " Brain ",
            "answer_type": "OPEN",
            "question_type": "ORGAN",
            "question": "What organ is this?",
            "phrase_type": "test_para",
        },
    ]
    write_json(root / "trainset.json", train)
    write_json(root / "testset.json", test)
    return root


def make_slake(root: Path) -> Path:
    """Slake1.0: train/validate/test.json with en + zh rows, imgs/xmlabN/source.jpg."""
    for index in range(3):
        write_image(root / "imgs" / f"xmlab{index}" / "source.jpg")

    def row(
        qid: int, img: int, question: str, answer: str, lang: str, answer_type: str, content: str
    ) -> dict:
        return {
            "img_id": img,
            "img_name": f"xmlab{img}/source.jpg",
            "question": question,
            "answer": answer,
            "q_lang": lang,
            "location": "Lung",
            "modality": "X-Ray",
            "answer_type": answer_type,
            "base_type": "vqa",
            "content_type": content,
            "triple": ["vhead", "_", "_"],
            "qid": qid,
        }

    write_json(
        root / "train.json",
        [
            row(1, 0, "Does the picture contain lung?", "Yes", "en", "CLOSED", "Organ"),
            row(2, 0, "图片中包含肺吗?", "是", "zh", "CLOSED", "Organ"),
            row(3, 1, "Where is the abnormality?", "Right Lung, Lower Left", "en", "OPEN", "Position"),
        ],
    )
    write_json(
        root / "validate.json", [row(11, 1, "What modality is used?", "X-Ray", "en", "OPEN", "Modality")]
    )
    write_json(
        root / "test.json",
        [
            row(21, 2, "Is the lung healthy?", "No", "en", "CLOSED", "Abnormality"),
            row(22, 2, "肺部健康吗?", "不", "zh", "CLOSED", "Abnormality"),
        ],
    )
    return root


FIXTURES = {
    "vqa-rad": make_vqa_rad,
    "slake": make_slake,
}


# ------------------------------------------------------------------------------------- the records
def test_normalize_answer_and_view() -> None:
    assert normalize_answer(" Yes. ") == "yes"
    assert normalize_answer(2) == "2"
    assert normalize_answer("Right  Lung,\tLower Left!") == "right lung, lower left"
    assert normalize_answer("10%") == "10%"
    assert [normalize_view(v) for v in ("PA", "ap", "LL", "LATERAL", "AP AXIAL", "", None)] == [
        "PA",
        "AP",
        "LATERAL",
        "LATERAL",
        "unknown",
        "unknown",
        "unknown",
    ]


def test_vqa_record_validates_and_pickles() -> None:
    record = VQARecord("x", "train", "1", ("a.png",), ("PA",), "q?", "no", "No", "CLOSED")
    assert record.image_paths == (Path("a.png"),) and record.is_yes_no
    assert pickle.loads(pickle.dumps(record)) == record
    assert hash(record) == hash(pickle.loads(pickle.dumps(record)))
    with pytest.raises(ValueError, match="split"):
        VQARecord("x", "validate", "1", ("a.png",), ("PA",), "q?", "no", "No", "CLOSED")
    with pytest.raises(ValueError, match="views"):
        VQARecord("x", "train", "1", ("a.png", "b.png"), ("PA",), "q?", "no", "No", "CLOSED")
    with pytest.raises(ValueError, match="answer_type"):
        VQARecord("x", "train", "1", ("a.png",), ("PA",), "q?", "no", "No", "closed")


# ----------------------------------------------------------------------------------------- VQA-RAD
def test_vqa_rad_reads_mevf_layout(tmp_path: Path) -> None:
    root = make_vqa_rad(tmp_path / "data_RAD")
    stats = ReadStats("vqa-rad")
    with pytest.warns(ReaderWarning, match="missing image: 1"):
        records = read_dataset("vqa-rad", root, stats=stats)
    assert [r.qid for r in records] == ["1", "2", "3", "0", "10"]
    assert stats.skipped == {"missing image": 1, "malformed row": 1}
    by_qid = {r.qid: r for r in records}
    assert by_qid["2"].answer == "2" and by_qid["2"].answer_raw == "2" and by_qid["2"].answer_type == "OPEN"
    assert (
        by_qid["3"].answer == "left lung"
        and by_qid["3"].answer_type == "CLOSED"
        and not by_qid["3"].is_yes_no
    )
    assert by_qid["0"].answer_type == "CLOSED" and by_qid["0"].split == "test"
    assert by_qid["10"].answer == "brain" and by_qid["10"].extra["phrase_type"] == "test_para"
    assert by_qid["1"].study_id == "synpic54610" and by_qid["1"].extra["image_organ"] == "HEAD"
    assert by_qid["1"].question_type == "PRES" and by_qid["1"].views == ("unknown",)
    assert all(p.is_file() for r in records for p in r.image_paths)


def test_vqa_rad_split_and_osf_image_folder(tmp_path: Path) -> None:
    root = make_vqa_rad(tmp_path / "rad", image_folder="VQA_RAD Image Folder")
    test = read_dataset("vqa-rad", root, split="test")
    assert {r.split for r in test} == {"test"} and len(test) == 2
    assert test[0].image_paths[0].parent.name == "VQA_RAD Image Folder"
    with pytest.raises(ReaderError, match="no 'val' split"):
        read_dataset("vqa-rad", root, split="val")


def test_vqa_rad_bad_files_fail_with_one_line(tmp_path: Path) -> None:
    root = make_vqa_rad(tmp_path / "rad")
    (root / "testset.json").write_text('[{"qid": 1,}', encoding="utf-8")
    with pytest.raises(ReaderError, match=r"testset\.json: malformed JSON at line 1") as info:
        read_dataset("vqa-rad", root, split="test")
    assert "\n" not in str(info.value)
    (root / "testset.json").unlink()
    with pytest.raises(ReaderError, match="testset.json"):
        read_dataset("vqa-rad", root)
    write_json(root / "trainset.json", {"not": "a list"})
    with pytest.raises(ReaderError, match="expected a JSON list"):
        read_dataset("vqa-rad", root, split="train")
    write_json(
        root / "trainset.json",
        [
            {"qid": 1},
            {"qid": 2},
            {"qid": 3, "image_name": "synpic54610.jpg", "question": "Is it?", "answer": "yes"},
        ],
    )
    with pytest.raises(ReaderError, match="2 of 3 rows are malformed"):
        read_dataset("vqa-rad", root, split="train")


# ------------------------------------------------------------------------------------------- SLAKE
def test_slake_keeps_english_and_maps_splits(tmp_path: Path) -> None:
    root = make_slake(tmp_path / "Slake1.0")
    stats = ReadStats("slake")
    records = read_dataset("slake", root, stats=stats)
    assert [(r.qid, r.split) for r in records] == [
        ("1", "train"),
        ("3", "train"),
        ("11", "val"),
        ("21", "test"),
    ]
    assert stats.filtered == {"q_lang != en": 2} and not stats.skipped
    first = records[0]
    assert first.study_id == "xmlab0" and first.question_type == "Organ" and first.answer == "yes"
    assert first.extra["modality"] == "X-Ray" and first.extra["triple"] == ["vhead", "_", "_"]
    assert first.image_paths[0] == root / "imgs" / "xmlab0" / "source.jpg"
    assert records[1].answer == "right lung, lower left" and records[1].answer_type == "OPEN"
    assert [r.qid for r in read_dataset("slake", root, split="val")] == ["11"]


def test_slake_missing_image_folder(tmp_path: Path) -> None:
    root = tmp_path / "Slake1.0"
    write_json(root / "train.json", [])
    with pytest.raises(ReaderError, match="missing SLAKE image folder"):
        read_dataset("slake", root)


# ---------------------------------------------------------------------------------------- registry
@pytest.mark.filterwarnings("ignore::mvcm_core.data.readers.ReaderWarning")
@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_registry_reads_every_vqa_fixture(name: str, tmp_path: Path) -> None:
    root = FIXTURES[name](tmp_path / name)
    records = read_dataset(name, root)
    assert records and all(isinstance(r, VQARecord) and r.dataset == name for r in records)
    assert all(r.answer == normalize_answer(r.answer_raw) for r in records)


def test_registry_has_every_dataset_of_the_design() -> None:
    assert set(READERS) == {
        "vqa-rad",
        "slake",
        "pathvqa",
        "vqa-med-2019",
        "roco",
        "mimic-cxr",
        "openi-images",
        "mvcm-qa",
    }


def test_registry_rejects_unknown_names_and_roots(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match="unknown dataset 'vqa-2019'"):
        read_dataset("vqa-2019", tmp_path)
    with pytest.raises(ReaderError, match="not a folder"):
        read_dataset("slake", tmp_path / "nowhere")
    with pytest.raises(ReaderError, match="unknown split 'dev'"):
        read_dataset("slake", make_slake(tmp_path / "s"), split="dev")
