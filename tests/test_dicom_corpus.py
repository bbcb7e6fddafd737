"""The reader against every real file pydicom and pydicom-data ship."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from mvcm_core.cli.main import main
from mvcm_core.data.dicom import read_dicom
from mvcm_core.data.study import collect_files, load_studies, read_file

GENERIC_REASONS = ("unexpected error", "unreadable DICOM header (", "cannot decode")


def all_corpus_files(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()]


def test_every_corpus_file_is_ok_or_rejected_with_a_specific_reason(pydicom_test_dir, pydicom_data_dir):
    files = all_corpus_files(pydicom_test_dir, pydicom_data_dir)
    assert len(files) > 200
    start = time.perf_counter()
    records = [read_file(path) for path in files]  # one by one: no de-duplication hides a decode
    elapsed = time.perf_counter() - start
    print(f"\nread {len(files)} corpus files in {elapsed:.1f} s")
    vague = []
    for record in records:
        assert record.status == "ok" or record.status.startswith("rejected: "), record.status
        assert "\n" not in record.status and len(record.status) < 200
        if any(record.reason.startswith(g) for g in GENERIC_REASONS[:2]):
            vague.append((record.path.name, record.reason))
    assert not vague, vague
    ok = {r.path.name for r in records if r.ok}
    # every encoding of the real chest PA decodes, and the transfer syntaxes the issue names all work
    assert {"RG1_UNCR.dcm", "RG1_UNCI.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm"} <= ok
    syntaxes = {r.meta.transfer_syntax for r in records if r.ok}
    for needed in ("JPEG Baseline", "JPEG Extended", "JPEG Lossless", "JPEG-LS", "JPEG 2000", "RLE Lossless"):
        assert any(s.startswith(needed) for s in syntaxes), f"no file decoded with {needed}"
    reasons = {r.path.name: r.reason for r in records}
    assert reasons["test-SR.dcm"].startswith("structured report")
    assert reasons["rtplan.dcm"].startswith("radiotherapy object")
    assert reasons["waveform_ecg.dcm"].startswith("waveform")
    assert reasons["CT_small.dcm"].startswith("unsupported SOP class CT Image Storage")
    assert reasons["DICOMDIR"].startswith("DICOMDIR")
    assert reasons["README.txt"].startswith("not a DICOM")


def test_mvcm_inspect_runs_over_the_whole_corpus_without_a_traceback(pydicom_test_dir, pydicom_data_dir):
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "mvcm_core", "inspect", "--json", str(pydicom_test_dir),
                             str(pydicom_data_dir)], capture_output=True, text=True, timeout=300)
    print(f"\nmvcm inspect over the corpus: {time.perf_counter() - start:.1f} s")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    document = json.loads(result.stdout)
    assert len(document["files"]) == len(collect_files([pydicom_test_dir, pydicom_data_dir]))
    for item in document["files"]:
        assert item["status"] == "ok" or item["status"].startswith("rejected: ")
        if item["status"] == "ok":
            assert item["study"].startswith("study-") and item["view"] in ("PA", "AP", "LATERAL", "unknown")
            assert {"series", "modality", "rows", "columns", "bits_stored", "photometric",
                    "transfer_syntax"} <= item.keys()


def test_rg1_encodings_decode_to_the_same_pixels(pydicom_data_dir):
    values = {name: read_dicom(pydicom_data_dir / f"RG1_{name}.dcm").values for name in
              ("UNCR", "UNCI", "J2KR", "J2KI")}
    # reversible JPEG 2000 is bit-exact with the uncompressed original ...
    np.testing.assert_array_equal(values["J2KR"], values["UNCR"])
    # ... and UNCI is the uncompressed copy of the irreversible J2KI, bit-exact with it
    np.testing.assert_array_equal(values["J2KI"], values["UNCI"])
    # the lossy pair is within a small tolerance of the lossless pair (15-bit data)
    difference = np.abs(values["J2KI"] - values["UNCR"])
    assert difference.mean() < 0.005 * 2**15 and difference.max() < 0.02 * 2**15


@pytest.mark.parametrize("backend", ["openjpeg", "pillow"])
def test_a_small_read_of_jpeg_2000_skips_wavelet_levels_close_to_the_full_decode(pydicom_data_dir, backend,
                                                                                monkeypatch):
    import pydicom

    from mvcm_core.data import openjp2
    from mvcm_core.data.dicom_j2k import decode_j2k_reduced
    from mvcm_core.data.imageops import resize_longest

    if backend == "openjpeg" and openjp2.library() is None:
        pytest.skip("no OpenJPEG 2.x shared library to load")
    if backend == "pillow":
        monkeypatch.setattr(openjp2, "library", lambda: None)  # the fallback when OpenJPEG cannot be loaded
    expected = {"openjpeg": (3, (245, 231)), "pillow": (1, (978, 921))}[backend]  # ceil(1955 / 2^r) × ceil(1841 / 2^r)
    worst = {"openjpeg": 0.05, "pillow": 0.01}[backend]  # at sharp edges: the 2^r-tap low-pass is not a bilinear filter
    for name in ("J2KR", "J2KI"):
        path = pydicom_data_dir / f"RG1_{name}.dcm"
        ds = pydicom.dcmread(path)
        frame, reduce = decode_j2k_reduced(ds, 128)
        full = ds.pixel_array
        assert (reduce, frame.shape) == expected
        assert abs(float(frame.mean()) - float(full.mean())) < 0.002 * 2**15  # same scale (15-bit data)
        assert decode_j2k_reduced(ds, 1000) is None  # half of 1955 is below 1000: decoded in full
        small, reference = read_dicom(path, max_side=128), resize_longest(read_dicom(path).values, 128)
        assert small.values.shape == reference.shape == (128, 121)
        difference = np.abs(small.values - reference) / np.ptp(reference)
        assert difference.mean() < 0.002 and np.quantile(difference, 0.99) < 0.01 and difference.max() < worst
    uncompressed = pydicom.dcmread(pydicom_data_dir / "RG1_UNCR.dcm")
    assert decode_j2k_reduced(uncompressed, 128) is None


def test_openjpeg_refuses_a_corrupt_codestream_without_crashing(pydicom_data_dir):
    import pydicom

    from mvcm_core.data import openjp2
    from mvcm_core.data.dicom_j2k import first_frame_stream

    if openjp2.library() is None:
        pytest.skip("no OpenJPEG 2.x shared library to load")
    stream = first_frame_stream(pydicom.dcmread(pydicom_data_dir / "RG1_J2KR.dcm"))
    assert openjp2.decode_reduced(stream[:200], 3) is None  # header only: no tile data
    assert openjp2.decode_reduced(b"\x00" * 64, 1) is None  # not a codestream
    damaged = bytearray(stream)
    damaged[5000:5400] = bytes(400)
    decoded = openjp2.decode_reduced(bytes(damaged), 3)  # OpenJPEG may conceal the damage; it must not crash
    assert decoded is None or decoded[0].shape == (245, 231)


def test_rg1_renders_as_a_correctly_oriented_chest_pa_with_bones_white(pydicom_data_dir):
    image = read_dicom(pydicom_data_dir / "RG1_UNCR.dcm")
    meta = image.meta
    assert (meta.rows, meta.columns, meta.photometric, meta.view) == (1955, 1841, "MONOCHROME1", "PA")
    assert image.inverted
    display = image.render("auto")
    rows, cols = display.shape
    band = display[int(0.3 * rows):int(0.6 * rows)]
    mediastinum = band[:, int(0.45 * cols):int(0.55 * cols)].mean()
    right_lung, left_lung = band[:, int(0.2 * cols):int(0.3 * cols)].mean(), band[:, int(0.7 * cols):int(0.8 * cols)].mean()
    assert mediastinum > right_lung + 0.1 and mediastinum > left_lung + 0.1
    # the heart sits on the patient's left, which a PA film shows on the image's right
    lower = display[int(0.55 * rows):int(0.75 * rows)]
    assert lower[:, int(0.55 * cols):int(0.7 * cols)].mean() > lower[:, int(0.3 * cols):int(0.45 * cols)].mean()


def test_dicomdir_study_is_one_study_with_lateral_and_ap_series(pydicom_test_dir):
    folder = pydicom_test_dir / "dicomdirtests"
    studies, records = load_studies([folder])
    cr_studies = [s for s in studies if any(v.image.meta.modality == "CR" for v in s.views)]
    assert len(cr_studies) == 1
    study = cr_studies[0]
    assert [(v.image.meta.series_number, v.label) for v in study.views] == [(1, "LATERAL"), (2, "AP"), (3, "AP")]
    assert all(v.image.meta.view_source == "ViewPosition" for v in study.views)
    # the CT and MR series of the same DICOMDIR are different studies, rejected with a reason
    assert any(r.reason.startswith("unsupported SOP class CT Image Storage") for r in records)
    # giving the DICOMDIR file alone finds the files it references
    via_dicomdir = collect_files([folder / "DICOMDIR"])
    assert len(via_dicomdir) > 20 and folder / "77654033" / "CR1" / "6154" in via_dicomdir


def test_inspect_text_output_never_shows_raw_uids_or_patient_names(pydicom_test_dir):
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = main(["inspect", str(pydicom_test_dir / "dicomdirtests" / "77654033")])
    text = buffer.getvalue()
    assert code == 0 and "3 view(s): LATERAL, AP, AP" in text
    import pydicom

    ds = pydicom.dcmread(pydicom_test_dir / "dicomdirtests" / "77654033" / "CR1" / "6154")
    assert str(ds.StudyInstanceUID) not in text and str(ds.SeriesInstanceUID) not in text
    for word in str(ds.PatientName).replace("^", " ").split():
        assert word not in text
    if ds.get("PatientID"):
        assert str(ds.PatientID) not in text


@pytest.mark.parametrize("name", ["JPGExtended.dcm", "JPEGLSNearLossless_16.dcm", "MR_small_RLE.dcm"])
def test_compressed_syntaxes_match_pydicom_reference_values(pydicom_test_dir, name):
    """Whatever the SOP class, our decode path gives the values pydicom's own plugins give."""
    import pydicom

    from mvcm_core.data.dicom import read_header
    from mvcm_core.data.dicom_pixels import decode_first_frame

    ds = read_header(pydicom_test_dir / name)
    frame, _ = decode_first_frame(ds)
    reference_file = {"JPGExtended.dcm": "JPEG-lossy.dcm", "MR_small_RLE.dcm": "MR_small.dcm"}.get(name)
    if reference_file:  # same content stored differently (12-bit lossy: compare to its other copy)
        reference = pydicom.dcmread(pydicom_test_dir / reference_file).pixel_array if name != "JPGExtended.dcm" \
            else decode_first_frame(read_header(pydicom_test_dir / reference_file))[0]
        np.testing.assert_array_equal(frame, reference)
    assert frame.shape == (int(ds.Rows), int(ds.Columns)) and frame.std() > 0
