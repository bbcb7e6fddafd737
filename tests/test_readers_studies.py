"""Study / caption readers (MIMIC-CXR-JPG, ROCO, Open-I) and the counts CLI, on native-layout fixtures."""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path
from types import SimpleNamespace

import pytest

from mvcm_core.data.readers import (
    ReaderError,
    ReaderWarning,
    ReadStats,
    StudyRecord,
    load_r2gen_splits,
    read_dataset,
)
from mvcm_core.data.readers.__main__ import main as readers_main
from mvcm_core.data.readers.mimic_cxr import CHEXPERT_LABELS
from test_readers import write_image  # the shared fixture writer


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    """Write a CSV, gzipped when the name ends in ``.gz`` (like PhysioNet's tables)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    data = buffer.getvalue().encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


# ------------------------------------------------------------------------------------- MIMIC-CXR
METADATA_HEADER = [
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]
# (dicom_id, subject, study, ViewPosition, write the jpg?)
MIMIC_IMAGES = [
    ("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "10000032", "50414267", "PA", True),
    ("174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "10000032", "50414267", "LATERAL", True),
    ("2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "10000032", "50414267", "AP", True),
    ("68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714", "10000032", "53189527", "PA", True),
    ("8a6b9a0b-3c4b4d2e-1f2a3b4c-5d6e7f80-91a2b3c4", "10000764", "57375967", "AP", True),
    ("9b7c0d1e-2f3a4b5c-6d7e8f90-a1b2c3d4-e5f6a7b8", "10000764", "57375967", "LL", True),
    ("ab12cd34-ef567890-12ab34cd-56ef7890-12345678", "10000764", "57375967", "", False),  # missing jpg
    ("cd34ef56-78901234-56789abc-def01234-56789abc", "10000898", "50771383", "AP AXIAL", True),
    ("ef56a789-01234567-89abcdef-01234567-89abcdef", "10000898", "59999999", "PA", True),  # no report
]
SUBJECT_SPLIT = {"10000032": "train", "10000764": "validate", "10000898": "test"}


def make_mimic(root: Path, gz: bool = True) -> Path:
    """MIMIC-CXR-JPG 2.0.0: metadata / split / chexpert tables, files/pXX/..., sectioned reports."""
    ext = ".csv.gz" if gz else ".csv"
    metadata = [
        [
            d,
            sub,
            st,
            "CHEST (PA AND LAT)",
            view,
            3056,
            2544,
            21800506,
            213014.531,
            "CHEST (PA AND LAT)",
            "postero-anterior",
            "Erect",
        ]
        for d, sub, st, view, _ in MIMIC_IMAGES
    ]
    metadata.append(
        ["ffff0000-bad", "p10000032", "s50414267", "PA", "", "", "", "", "", "", "", ""]
    )  # malformed
    write_csv(root / f"mimic-cxr-2.0.0-metadata{ext}", METADATA_HEADER, metadata)
    split_rows = [[d, st, sub, SUBJECT_SPLIT[sub]] for d, sub, st, _, _ in MIMIC_IMAGES]
    write_csv(
        root / f"mimic-cxr-2.0.0-split{ext}", ["dicom_id", "study_id", "subject_id", "split"], split_rows
    )
    labels = {name: "" for name in CHEXPERT_LABELS}
    effusion = {**labels, "Pleural Effusion": "1.0", "Edema": "-1.0", "Pneumothorax": "0.0"}
    write_csv(
        root / f"mimic-cxr-2.0.0-chexpert{ext}",
        ["subject_id", "study_id", *CHEXPERT_LABELS],
        [["10000032", "50414267", *effusion.values()], ["10000764", "57375967", *labels.values()]],
    )
    for dicom, subject, study, _, exists in MIMIC_IMAGES:
        if exists:
            write_image(root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg")
    write_csv(
        root / "mimic_cxr_sectioned.csv",
        ["study", "impression", "findings", "last_paragraph", "comparison"],
        [
            [
                "s50414267",
                "Small right pleural effusion.",
                'PA, lateral and AP views of the chest.\nBlunting of the right costophrenic angle, "new".',
                "",
                "None.",
            ],
            ["s53189527", "", "", "No acute cardiopulmonary process.", ""],
            ["s57375967", "No pneumothorax.", "Heart size is normal.", "", ""],
            ["s50771383", "Stable appearance.", "", "", "Prior study."],
            ["s59999999", "", "", "", ""],
        ],
    )
    return root


def test_mimic_groups_all_views_of_a_study(tmp_path: Path) -> None:
    root = make_mimic(tmp_path / "mimic-cxr-jpg" / "2.0.0")
    stats = ReadStats("mimic-cxr")
    with pytest.warns(ReaderWarning, match="missing image: 1"):
        records = read_dataset("mimic-cxr", root, stats=stats)
    assert [r.study_id for r in records] == ["50414267", "50771383", "53189527", "57375967"]
    assert stats.skipped == {"missing image": 1, "malformed row": 1}
    assert stats.filtered == {"no report text": 1}
    study = records[0]
    assert study.split == "train" and study.views == ("PA", "AP", "LATERAL")
    assert [p.name[:8] for p in study.image_paths] == ["02aa804e", "2a2277a9", "174413ec"]
    assert all(p.is_file() for p in study.image_paths)
    assert study.report.startswith("PA, lateral and AP views") and study.report.endswith(
        "Small right pleural effusion."
    )
    assert '"new"' in study.sections["findings"] and study.sections["comparison"] == "None."
    assert study.labels["Pleural Effusion"] == 1.0 and study.labels["Edema"] == -1.0
    assert study.labels["Pneumothorax"] == 0.0 and study.labels["Cardiomegaly"] is None
    assert study.extra["subject_id"] == "10000032" and study.extra["view_positions"] == [
        "PA",
        "AP",
        "LATERAL",
    ]
    by_id = {r.study_id: r for r in records}
    assert by_id["53189527"].report == "No acute cardiopulmonary process."
    assert by_id["53189527"].extra["report_source"] == "last_paragraph" and by_id["53189527"].labels is None
    assert by_id["57375967"].split == "val" and by_id["57375967"].views == ("AP", "LATERAL")
    assert by_id["50771383"].split == "test" and by_id["50771383"].views == ("unknown",)


@pytest.mark.filterwarnings("ignore::mvcm_core.data.readers.ReaderWarning")
def test_mimic_view_filters_and_split(tmp_path: Path) -> None:
    root = make_mimic(tmp_path / "mimic", gz=False)  # uncompressed tables are accepted too
    stats = ReadStats("mimic-cxr")
    pairs = read_dataset("mimic-cxr", root, frontal_and_lateral=True, stats=stats)
    assert [r.study_id for r in pairs] == ["50414267", "57375967"]
    assert stats.filtered["not frontal+lateral"] == 3  # PA only, unknown only, PA without report
    frontal = read_dataset("mimic-cxr", root, split="train", views={"PA", "AP"})
    assert [r.views for r in frontal] == [("PA", "AP"), ("PA",)]
    assert [r.study_id for r in read_dataset("mimic-cxr", root, split="val")] == ["57375967"]
    with pytest.raises(ReaderError, match="unknown views"):
        read_dataset("mimic-cxr", root, views={"LL"})


def test_mimic_bad_inputs_fail_with_one_line(tmp_path: Path) -> None:
    root = make_mimic(tmp_path / "mimic")
    (root / "mimic_cxr_sectioned.csv").rename(root / "reports.csv")
    with pytest.raises(
        ReaderError, match="missing MIMIC-CXR sectioned reports CSV: .*mimic_cxr_sectioned.csv"
    ):
        read_dataset("mimic-cxr", root)
    write_csv(
        root / "mimic-cxr-2.0.0-metadata.csv.gz", ["dicom_id", "subject_id", "study_id"], [["a", "1", "2"]]
    )
    with pytest.raises(ReaderError, match=r"metadata\.csv\.gz: missing column\(s\) ViewPosition"):
        read_dataset("mimic-cxr", root, sectioned_csv=root / "reports.csv")
    (root / "mimic-cxr-2.0.0-split.csv.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ReaderError, match=r"split\.csv\.gz: cannot read"):
        read_dataset("mimic-cxr", root, sectioned_csv=root / "reports.csv")
    (root / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    with pytest.raises(ReaderError, match="missing MIMIC-CXR split table"):
        read_dataset("mimic-cxr", root, sectioned_csv=root / "reports.csv")


# ------------------------------------------------------------------------------------------ ROCO
def make_roco(repo: Path) -> Path:
    """roco-dataset clone after scripts/fetch.py: data/<split>/radiology/{captions,dlinks}.txt + images/."""
    rows = {
        "train": [
            (
                "ROCO_00002",
                "PMC4608653",
                "fonc-05-00214-g001.jpg",
                " Computed tomography scan in axial view showing obliteration of the left maxillary sinus.",
            ),
            ("ROCO_00003", "PMC3564929", "IJD-58-60-g001.jpg", " Chest radiograph, PA view: normal."),
            ("ROCO_00004", "PMC1234567", "missing.jpg", " Image that was never fetched."),
        ],
        "validation": [
            (
                "ROCO_00020",
                "PMC3498864",
                "jovr-04-256f2.jpg",
                " Axial computed tomography scan of the pelvis (arrow).",
            )
        ],
        "test": [
            (
                "ROCO_00027",
                "PMC4299014",
                "gr1.jpg",
                " Postoperative anteroposterior radiograph of the pelvis.",
            )
        ],
    }
    for split, items in rows.items():
        folder = repo / "data" / split / "radiology"
        folder.mkdir(parents=True)
        captions = [f"{rid}\t{caption}" for rid, _, _, caption in items]
        dlinks = [
            f"{rid}\twget -r ftp://ftp.ncbi.nlm.nih.gov/pub/pmc/oa_package/69/93/{pmc}.tar.gz -P /path/to/Dir"
            f"\t{name}"
            for rid, pmc, name, _ in items
        ]
        if split == "train":
            captions.append("this line has no tab")
        (folder / "captions.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")
        (folder / "dlinks.txt").write_text("\n".join(dlinks) + "\n", encoding="utf-8")
        for rid, pmc, name, _ in items:
            if name == "missing.jpg":
                continue
            # one repack-style name (ROCO_id.jpg), the others as fetch.py names them
            write_image(folder / "images" / (f"{rid}.jpg" if rid == "ROCO_00003" else f"{pmc}_{name}"))
    return repo


def test_roco_reads_fetched_layout(tmp_path: Path) -> None:
    repo = make_roco(tmp_path / "roco-dataset")
    stats = ReadStats("roco")
    with pytest.warns(ReaderWarning):
        records = read_dataset("roco", repo / "data", stats=stats)
    assert stats.skipped == {"missing image": 1, "malformed row": 1}
    assert [(r.study_id, r.split) for r in records] == [
        ("ROCO_00002", "train"),
        ("ROCO_00003", "train"),
        ("ROCO_00020", "val"),
        ("ROCO_00027", "test"),
    ]
    first = records[0]
    assert isinstance(first, StudyRecord) and first.image_paths[0].name == "PMC4608653_fonc-05-00214-g001.jpg"
    assert first.report.startswith("Computed tomography") and first.sections == {"caption": first.report}
    assert records[1].image_paths[0].name == "ROCO_00003.jpg"
    assert [r.study_id for r in read_dataset("roco", repo, split="val")] == [
        "ROCO_00020"
    ]  # repo root works too


def test_roco_missing_captions(tmp_path: Path) -> None:
    repo = make_roco(tmp_path / "roco")
    (repo / "data" / "test" / "radiology" / "captions.txt").unlink()
    with pytest.raises(ReaderError, match=r"missing ROCO captions file: .*test/radiology/captions.txt"):
        read_dataset("roco", repo, split="test")


# ---------------------------------------------------------------------------------------- Open-I
def make_openi(root: Path) -> tuple[Path, dict, dict]:
    """NLMCXR_png/ images, a parsed-report mapping and R2Gen-style split CSV."""
    for image_id in (
        "CXR1_1_IM-0001-3001",
        "CXR1_1_IM-0001-4001",
        "CXR2_IM-0652-1001",
        "CXR2_IM-0652-2001",
        "CXR3_IM-1384-1001",
        "CXR5_IM-2117-1003002",
    ):
        write_image(root / "NLMCXR_png" / f"{image_id}.png")
    reports = {
        "CXR1": (
            ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"],
            "The cardiac silhouette is normal.",
            "Normal chest x-XXXX.",
            ["PA", "LATERAL"],
        ),
        "CXR2": SimpleNamespace(
            image_ids=["CXR2_IM-0652-1001", "CXR2_IM-0652-2001", "CXR2_IM-0652-3001"],
            findings="Borderline cardiomegaly.",
            impression="No acute pulmonary findings.",
        ),
        "CXR3": (["CXR3_IM-1384-1001"], "", "No active disease."),
        "CXR4": (["CXR4_IM-2050-1001"], "", ""),  # no text
        "CXR5": (["CXR5_IM-2117-1003002"], "Clear lungs.", ""),  # not in the split list
        "CXR6": ("not", "enough"),  # malformed entry
    }
    split_csv = write_csv(
        root / "openi_r2gen_splits.csv",
        ["study_id", "report_file", "split", "image_1", "image_2"],
        [
            ["CXR1_1_IM-0001", "1.xml", "train", "", ""],
            ["CXR2_IM-0652", "2.xml", "test", "", ""],
            ["CXR3_IM-1384", "3.xml", "val", "", ""],
            ["CXR4_IM-2050", "4.xml", "train", "", ""],
            ["CXR6_IM-2263", "6.xml", "train", "", ""],
        ],
    )
    return root, reports, load_r2gen_splits(split_csv)


@pytest.mark.filterwarnings("ignore::mvcm_core.data.readers.ReaderWarning")
def test_openi_images_pairs_reports_and_images(tmp_path: Path) -> None:
    root, reports, splits = make_openi(tmp_path / "openi")
    assert splits["CXR2"] == "test" and splits["CXR3"] == "val"
    stats = ReadStats("openi-images")
    with pytest.warns(ReaderWarning):
        records = read_dataset("openi-images", root, reports=reports, splits=splits, stats=stats)
    assert [(r.study_id, r.split) for r in records] == [("CXR1", "train"), ("CXR2", "test"), ("CXR3", "val")]
    assert stats.skipped == {"missing image": 1, "malformed report entry": 1}
    assert stats.filtered == {"no report text": 1, "no split": 1}
    cxr1, cxr2, cxr3 = records
    assert (
        cxr1.views == ("PA", "LATERAL")
        and cxr1.report == "The cardiac silhouette is normal.\nNormal chest x-XXXX."
    )
    assert cxr2.views == ("unknown", "unknown") and len(cxr2.image_paths) == 2
    assert cxr2.sections == {
        "findings": "Borderline cardiomegaly.",
        "impression": "No acute pulmonary findings.",
    }
    assert cxr3.report == "No active disease." and cxr3.extra["image_ids"] == ["CXR3_IM-1384-1001"]
    only_test = read_dataset("openi-images", root / "NLMCXR_png", "test", reports=reports, splits=splits)
    assert [r.study_id for r in only_test] == ["CXR2"]


def test_openi_images_takes_parser_report_objects(tmp_path: Path) -> None:
    """Shaped like openi.OpenIReport: text in findings_text, structured findings, its own split."""
    root, _, _ = make_openi(tmp_path / "openi")
    parsed = [
        SimpleNamespace(
            uid="CXR1",
            findings_text="Heart size normal.",
            impression="No acute disease.",
            findings=[SimpleNamespace(term="normal")],
            image_ids=["CXR1_1_IM-0001-3001"],
            split="val",
            study_id="CXR1_1_IM-0001",
        ),
        SimpleNamespace(
            uid="CXR2",
            findings_text="",
            impression="Cardiomegaly.",
            findings=[],
            image_ids=["CXR2_IM-0652-1001"],
            split="train",
            study_id="CXR2_IM-0652",
        ),
    ]
    own = read_dataset("openi-images", root, reports=parsed)
    assert [(r.study_id, r.split, r.report) for r in own] == [
        ("CXR1", "val", "Heart size normal.\nNo acute disease."),
        ("CXR2", "train", "Cardiomegaly."),
    ]
    assert own[0].extra["r2gen_study_id"] == "CXR1_1_IM-0001"
    overridden = read_dataset("openi-images", root, "test", reports=parsed, splits={"CXR2": ("test", "x")})
    assert [r.study_id for r in overridden] == ["CXR2"]


def test_openi_images_needs_reports(tmp_path: Path) -> None:
    root, reports, _ = make_openi(tmp_path / "openi")
    with pytest.raises(ReaderError, match="needs reports="):
        read_dataset("openi-images", root)
    with pytest.raises(ReaderError, match="reports must be a mapping"):
        read_dataset("openi-images", root, reports=[1, 2])
    with pytest.raises(ReaderError, match="no PNG"):
        read_dataset("openi-images", tmp_path, reports=reports, splits={})


# ------------------------------------------------------------------------------------------- CLI
def test_counts_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_mimic(tmp_path / "mimic")
    assert readers_main(["mimic-cxr", str(root), "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert "mimic-cxr: kept 2" in out and "PA+AP+LATERAL: 1" in out
    assert readers_main(["roco", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: roco: dataset root is not a folder") and err.count("\n") == 1
