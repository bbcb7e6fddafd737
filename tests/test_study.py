"""Study grouping, view labels, raster uploads, DICOMDIR handling and the ``mvcm inspect`` command."""

from __future__ import annotations

import io
import json
import shutil
from contextlib import redirect_stdout

import numpy as np
import pydicom
import pytest
from conftest import chest_like
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet

from mvcm_core.cli.main import main
from mvcm_core.data.dicom_meta import infer_view
from mvcm_core.data.dicom_write import build_radiograph_dataset, save_dataset, write_radiograph
from mvcm_core.data.study import load_studies, scan_paths


def write_study(folder, study_key, views=("PA", "LL")):
    for number, view in enumerate(views, start=1):
        write_radiograph(folder / f"{study_key}_{view}.dcm", chest_like(seed=number), study_key=study_key,
                         view=view, series_number=number)


def run_cli(argv):
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = main(argv)
    return code, buffer.getvalue()


def test_two_studies_in_one_folder_stay_two_studies(tmp_path):
    write_study(tmp_path, "first")
    write_study(tmp_path / "sub", "second", views=("LL", "PA"))
    studies, records = load_studies([tmp_path])
    assert len(studies) == 2 and all(r.ok for r in records)
    by_views = sorted([v.label for v in s.views] for s in studies)
    # views are ordered by series number: the second study's lateral is its series 1
    assert by_views == [["LATERAL", "PA"], ["PA", "LATERAL"]]
    for study in studies:
        assert study.frontal.label == "PA" and study.lateral.label == "LATERAL"
        assert len({v.image.meta.study_key for v in study.views}) == 1


def test_bad_files_are_reported_and_the_rest_of_the_study_is_kept(tmp_path):
    write_study(tmp_path, "kept")
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage")
    (tmp_path / "notes.txt").write_text("not an image")
    shutil.copy(tmp_path / "kept_PA.dcm", tmp_path / "copy_of_pa")
    studies, records = load_studies([tmp_path])
    assert len(studies) == 1 and len(studies[0].views) == 2
    status = {r.path.name: r.status for r in records}
    assert status["broken.dcm"].startswith("rejected: ")
    assert status["notes.txt"].startswith("rejected: not a DICOM")
    duplicate = [s for name, s in status.items() if name in ("copy_of_pa", "kept_PA.dcm") and s != "ok"]
    assert duplicate == ["rejected: duplicate of copy_of_pa (same instance)"] or duplicate == [
        "rejected: duplicate of kept_PA.dcm (same instance)"]


def test_png_and_jpeg_uploads_form_one_study_with_unknown_views(tmp_path):
    gray = (chest_like(bits=12) // 16).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "frontal.png")
    Image.fromarray(gray).save(tmp_path / "lateral.jpg", quality=95)
    studies, _ = load_studies([tmp_path / "frontal.png", tmp_path / "lateral.jpg"])
    assert len(studies) == 1 and [v.label for v in studies[0].views] == ["unknown", "unknown"]
    np.testing.assert_allclose(studies[0].views[0].pixels, gray / 255.0, atol=1e-6)
    assert studies[0].views[1].image.meta.sop_class == "JPEG image"


def test_view_label_falls_back_from_view_position_to_codes_to_descriptions():
    ds = Dataset()
    assert infer_view(ds) == ("unknown", "none")
    ds.SeriesDescription = "CHEST LAT"
    assert infer_view(ds) == ("LATERAL", "SeriesDescription")
    code = Dataset()
    code.CodeMeaning = "postero-anterior"
    ds.ViewCodeSequence = [code]
    assert infer_view(ds) == ("PA", "ViewCodeSequence")
    ds.ViewPosition = "AP"
    assert infer_view(ds) == ("AP", "ViewPosition")
    ds.ViewPosition = "RLO"  # oblique: not frontal or lateral, so the code sequence decides
    assert infer_view(ds) == ("PA", "ViewCodeSequence")


@pytest.mark.parametrize(("description", "view"), [("PA erect", "PA"), ("Chest AP portable", "AP"),
                                                   ("LATERAL", "LATERAL"), ("Thorax", "unknown")])
def test_descriptions(description, view):
    ds = Dataset()
    ds.SeriesDescription = description
    assert infer_view(ds)[0] == view


def test_dicomdir_references_missing_files_are_reported(tmp_path):
    source = tmp_path / "src"
    write_study(source, "dd")
    fileset = FileSet()
    for path in sorted(source.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.StudyDate, ds.StudyTime, ds.StudyID = "20260101", "120000", "1"  # DICOMDIR study records need them
        fileset.add(ds)
    media = tmp_path / "media"
    fileset.write(media)
    referenced = sorted(p for p in media.rglob("*") if p.is_file() and p.name != "DICOMDIR")
    assert len(referenced) == 2
    referenced[0].unlink()
    records = scan_paths([media / "DICOMDIR"])
    status = sorted(r.status for r in records)
    assert status == ["ok", "rejected: DICOMDIR (media directory), not an image; its referenced files are read instead",
                      "rejected: file not found"]


def test_inspect_json_and_exit_codes(tmp_path):
    write_study(tmp_path, "one")
    ds = build_radiograph_dataset(chest_like(), study_key="two", view="PA")
    ds.PatientName = "SECRET^PATIENT"
    save_dataset(ds, tmp_path / "other.dcm")
    code, out = run_cli(["inspect", "--json", str(tmp_path)])
    document = json.loads(out)
    assert code == 0 and len(document["studies"]) == 2
    assert sorted(len(s["views"]) for s in document["studies"]) == [1, 2]
    assert "SECRET" not in out and "PATIENT" not in out
    files = {item["file"]: item for item in document["files"]}
    assert files["one_LL.dcm"]["view"] == "LATERAL" and files["one_LL.dcm"]["series_number"] == 2
    assert files["one_LL.dcm"]["transfer_syntax"] == "Explicit VR Little Endian"
    code, out = run_cli(["inspect", str(tmp_path / "missing.dcm")])
    assert code == 1 and "rejected: file not found" in out
    code, out = run_cli([])
    assert code == 2


def test_png_previews_beside_dicoms_are_not_an_extra_study(tmp_path):
    write_study(tmp_path / "s1", "withpreview")
    Image.fromarray((chest_like(bits=12) // 16).astype(np.uint8)).save(tmp_path / "s1" / "PA.png")
    Image.fromarray((chest_like(bits=12) // 16).astype(np.uint8)).save(tmp_path / "alone.png")
    studies, records = load_studies([tmp_path])
    assert sorted(len(s.views) for s in studies) == [1, 2]  # the DICOM study + the lone PNG upload
    status = {r.path.name: r.status for r in records}
    assert status["PA.png"].startswith("rejected: preview image beside DICOM files")
    assert status["alone.png"] == "ok"
