"""Hostile files: a bounded fuzz run, truncation at every element boundary, and the crashes it found.

Every case must end in ``ok`` or one printable ``rejected: <reason>`` line, within a time bound and a
peak-memory bound, without killing the process (``benchmarks/fuzz_dicom.py``; the longer run is
``python -m benchmarks.fuzz_dicom --cases 20000``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from benchmarks.fuzz_dicom import all_seeds, element_table, isolated_case, mutate, nested_sequences
from mvcm_core.data.dicom import Limits
from mvcm_core.data.dicom_write import build_radiograph_dataset, save_dataset
from mvcm_core.data.study import read_file

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def seeds():
    return all_seeds()


@pytest.mark.slow
def test_bounded_fuzz_run_of_2000_cases_ends_every_case_in_a_result_or_one_line():
    result = subprocess.run([sys.executable, "-m", "benchmarks.fuzz_dicom", "--cases", "2000", "--seed", "0"],
                            cwd=ROOT, capture_output=True, text=True, timeout=1500)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"\nfuzz: {summary}")
    assert result.returncode == 0 and "failure" not in summary, summary
    assert summary["cases"] == 2000 and summary["outcomes"].get("ok", 0) > 0 and len(summary["outcomes"]) > 10


@pytest.mark.parametrize("name", ["synthetic-native", "synthetic-rle", "synthetic-j2k", "synthetic-deflated"])
def test_truncation_at_every_element_boundary(seeds, name, tmp_path):
    data = seeds[name]
    cuts = {0, 127, 131, len(data) - 1}
    for element in element_table(data):
        cuts |= {element.start - 1, element.start, element.start + 1, element.value_start}
    assert len(cuts) > 20
    statuses = {cut: isolated_case(data[:cut], tmp_path, 256.0)["status"] for cut in sorted(cuts) if cut > 0}
    assert all(s == "ok" or s.startswith("rejected: ") for s in statuses.values())  # always explained ...
    if name != "synthetic-deflated":  # ... and never silently accepted, unless only the end delimiter is cut
        accepted = [cut for cut, s in statuses.items() if s == "ok"]
        assert all(cut >= len(data) - 8 for cut in accepted), accepted


def test_huge_declared_lengths_and_wrong_vrs_on_every_element(seeds, tmp_path):
    data = seeds["synthetic-native"]
    count = len(element_table(data))
    for index in range(count):
        for op, b in (("length", 0), ("length", 2), ("vr", 3), ("vr", 14)):
            isolated_case(mutate(data, op, index, b, 1), tmp_path, 256.0)


def test_bogus_transfer_syntaxes_are_rejected_in_one_line(seeds, tmp_path):
    for name in ("synthetic-native", "synthetic-j2k", "synthetic-rle"):
        for index in range(12):
            status = isolated_case(mutate(seeds[name], "syntax", index, 0, 0), tmp_path, 256.0)["status"]
            assert status == "ok" or status.startswith("rejected: ")


def test_deeply_nested_sequences(tmp_path):
    for depth, undefined in ((50, False), (50, True)):
        assert isolated_case(nested_sequences(depth, undefined), tmp_path, 256.0)["status"] == "ok"
    for depth, undefined in ((5000, False), (5000, True)):  # past Python's recursion limit: one line
        status = isolated_case(nested_sequences(depth, undefined), tmp_path, 256.0)["status"]
        assert status in ("ok", "rejected: unreadable DICOM header (RecursionError)"), status


# ---- regression cases: crashes the fuzzer found, kept -------------------------------------------


def _patched_j2k(seeds, rows: int, cols: int) -> bytes:
    data = bytearray(seeds["synthetic-j2k"])
    siz = data.find(b"\xff\x4f\xff\x51")
    data[siz + 8:siz + 16] = cols.to_bytes(4, "big") + rows.to_bytes(4, "big")  # Xsiz, Ysiz
    return bytes(data)


def test_a_compressed_stream_larger_than_its_header_is_refused_before_decoding(seeds, tmp_path):
    """A 4 KB file with a 40×32 header and a 12000×12000 JPEG 2000 stream took ~600 MB to 'decode'."""
    result = isolated_case(_patched_j2k(seeds, 12000, 12000), tmp_path, 128.0)
    assert result["status"] == "rejected: compressed stream is 12000×12000 but the header says 40×32"


def test_a_deflate_bomb_is_refused_while_inflating(tmp_path):
    """A 400 KB deflated file inflating to 400 MB took ~830 MB and was then rejected for the wrong reason."""
    ds = build_radiograph_dataset(np.zeros((16, 16), np.uint16), study_key="bomb")
    ds.add_new(0x00091010, "OB", b"\0" * 4_000_000)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    path = save_dataset(ds, tmp_path / "bomb.dcm")
    assert path.stat().st_size < 20_000
    record = read_file(path, Limits(max_file_bytes=1_000_000))
    assert record.reason == "deflated dataset inflates beyond the 1 MB limit"
    assert read_file(path).status == "ok"  # within the default limit the same file reads (offsets inflated)


def test_a_sop_class_swallowing_the_file_meta_gives_a_printable_line(seeds, tmp_path):
    data = bytearray(seeds["synthetic-native"])
    meta_class = next(e for e in element_table(bytes(data)) if e.tag == 0x00020002)
    data[meta_class.length_offset:meta_class.length_offset + 2] = (200).to_bytes(2, "little")
    result = isolated_case(bytes(data), tmp_path, 256.0)
    assert result["status"].startswith("rejected: ") and result["status"].isprintable()


def test_values_of_the_wrong_length_for_their_vr_are_a_rejection_not_a_crash(tmp_path):
    ds = build_radiograph_dataset(np.zeros((16, 16), np.uint16), study_key="odd")
    ds["Rows"].VR = "US"
    ds.save_as(tmp_path / "ok.dcm", enforce_file_format=True)
    data = bytearray((tmp_path / "ok.dcm").read_bytes())
    rows = next(e for e in element_table(bytes(data)) if e.tag == 0x00280010)
    data[rows.length_offset:rows.length_offset + 2] = (3).to_bytes(2, "little")  # US of 3 bytes
    data[rows.value_start + 2:rows.value_start + 2] = b"\0"
    status = isolated_case(bytes(data), tmp_path, 256.0)["status"]
    assert status.startswith("rejected: ") and "unexpected error" not in status


def test_a_jpeg_with_a_32_bit_header_no_longer_aborts_the_process(pydicom_test_dir, tmp_path):
    """GDCM's JPEG codec threw an uncaught C++ exception (SIGABRT: the whole app would die)."""
    import pydicom

    ds = pydicom.dcmread(pydicom_test_dir / "SC_rgb_jpeg_gdcm.dcm")
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 17, 16
    ds.save_as(tmp_path / "case.dcm")
    status = isolated_case((tmp_path / "case.dcm").read_bytes(), tmp_path, 256.0)["status"]
    assert status == "rejected: JPEG pixel data must be 8 or 16 bits allocated, at most 16 stored (got 32/17)"


def test_the_seeds_themselves_read(seeds, tmp_path):
    ok = [name for name, data in seeds.items() if isolated_case(data, tmp_path, 256.0)["status"] == "ok"]
    assert {"synthetic-native", "synthetic-rle", "synthetic-j2k", "synthetic-deflated"} <= set(ok)
    assert len(zlib.compress(b"".join(seeds.values()))) > 50_000  # the corpus part is there too


def test_a_corrupt_jpeg_baseline_stream_no_longer_aborts_the_process(tmp_path):
    """Kept fuzzer case: one byte spliced out of a JPEG Baseline stream made GDCM abort (SIGABRT)."""
    data = (Path(__file__).parent / "fuzz_crash_jpeg_baseline.dcm").read_bytes()
    status = isolated_case(data, tmp_path, 256.0)["status"]
    assert status == "rejected: cannot decode the JPEG Baseline (Process 1) pixel data"


def test_a_rust_decoder_panic_is_a_rejection_not_an_escaping_base_exception(tmp_path):
    """Kept atheris case: pylibjpeg-rle panicked (pyo3 PanicException is a BaseException, not an Exception)."""
    data = (Path(__file__).parent / "fuzz_crash_rle_panic.dcm").read_bytes()
    status = isolated_case(data, tmp_path, 256.0)["status"]
    assert status == "rejected: cannot decode the RLE Lossless pixel data (PanicException)"
