"""The DICOM reader on files the tests write: polarity, signedness, VOI LUTs, RLE, and bad files."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from conftest import chest_like
from PIL import Image
from pydicom.dataset import Dataset

from mvcm_core.data.dicom import DicomRejected, Limits, read_dicom
from mvcm_core.data.dicom_write import build_radiograph_dataset, save_dataset, write_radiograph
from mvcm_core.data.study import read_file


def test_monochrome1_and_monochrome2_of_the_same_content_render_the_same(tmp_path):
    stored = chest_like(bits=12)
    write_radiograph(tmp_path / "m2.dcm", stored, study_key="s", photometric="MONOCHROME2",
                     window=(2000, 3000))
    # MONOCHROME1: minimum shown white, so the same picture stores 4095 - v and mirrors the window
    write_radiograph(tmp_path / "m1.dcm", (4095 - stored).astype(np.uint16), study_key="s",
                     photometric="MONOCHROME1", window=(4095 - 2000, 3000))
    mono2, mono1 = read_dicom(tmp_path / "m2.dcm"), read_dicom(tmp_path / "m1.dcm")
    assert mono1.inverted and not mono2.inverted
    np.testing.assert_allclose(mono1.display, mono2.display, atol=1e-3)
    for preset in ("auto", "lung", "bone"):
        np.testing.assert_allclose(mono1.render(preset), mono2.render(preset), atol=2e-3)
    # and the lungs are darker than the mediastinum in both (bones white)
    lungs, middle = mono1.display[:, 20:28].mean(), mono1.display[:, 38:42].mean()
    assert middle > lungs + 0.3


def test_inversion_happens_after_windowing_not_before(tmp_path):
    stored = chest_like(bits=12)
    center, width = 1000.0, 1000.0
    write_radiograph(tmp_path / "m1.dcm", stored, study_key="s", photometric="MONOCHROME1", window=(center, width))
    image = read_dicom(tmp_path / "m1.dcm")
    # PS3.3 C.11.2.1.2 LINEAR window on the stored values, then invert within [0, 1]
    windowed = np.clip((stored - (center - 0.5 - (width - 1) / 2)) / (width - 1), 0, 1)
    np.testing.assert_allclose(image.display, 1.0 - windowed, atol=1e-5)
    # inverting first (max - v, then the same window) would turn the lungs white instead of grey
    assert 0.5 < image.display[stored < 1200].mean() < 0.85


def test_twelve_bit_signed_data_with_rescale(tmp_path):
    signed = chest_like(bits=12).astype(np.int16) - 2048
    ds = build_radiograph_dataset(signed, study_key="signed", bits_stored=12)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -100
    raw = np.frombuffer(ds.PixelData, dtype="<i2").astype(np.uint16) & 0x0FFF  # only 12 bits stored
    ds.PixelData = raw.tobytes()
    save_dataset(ds, tmp_path / "signed.dcm")
    image = read_dicom(tmp_path / "signed.dcm")
    assert image.meta.pixel_representation == 1 and image.meta.bits_stored == 12
    np.testing.assert_array_equal(image.values, signed.astype(np.float32) * 2 - 100)
    assert image.stored_range == (-2048 * 2 - 100, 2047 * 2 - 100)
    assert 0.0 <= image.display.min() and image.display.max() <= 1.0


def test_garbage_in_unused_high_bits_is_masked(tmp_path):
    stored = chest_like(bits=12)
    ds = build_radiograph_dataset(stored, study_key="hb", bits_stored=12)
    ds.PixelData = (np.frombuffer(ds.PixelData, dtype="<u2") | 0xF000).tobytes()  # overlay-style bits
    save_dataset(ds, tmp_path / "hb.dcm")
    np.testing.assert_array_equal(read_dicom(tmp_path / "hb.dcm").values, stored.astype(np.float32))


def test_window_from_voi_lut_sequence(tmp_path):
    stored = chest_like(bits=12)
    ds = build_radiograph_dataset(stored, study_key="lut", bits_stored=12)
    lut = np.clip(np.arange(4096) // 16, 0, 255).astype(np.uint16)  # a 4096-entry, 8-bit LUT
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 8]
    item.LUTExplanation = "SOFT"
    item.LUTData = lut.astype("<u2").tobytes()  # OW: 16-bit words even for an 8-bit LUT
    ds.VOILUTSequence = [item]
    save_dataset(ds, tmp_path / "lut.dcm")
    image = read_dicom(tmp_path / "lut.dcm")
    assert image.preset.name == "file: SOFT" and image.preset.kind == "voi_lut"
    np.testing.assert_allclose(image.display, lut[stored] / 255.0, atol=1e-6)


def test_multiple_file_windows_become_named_presets(tmp_path):
    ds = build_radiograph_dataset(chest_like(), study_key="w")
    ds.WindowCenter, ds.WindowWidth = [2000, 1000], [3000, 500]
    ds.WindowCenterWidthExplanation = ["NORMAL", "HARDER"]
    save_dataset(ds, tmp_path / "w.dcm")
    image = read_dicom(tmp_path / "w.dcm")
    assert [p.name for p in image.presets][:2] == ["file: NORMAL", "file: HARDER"]
    assert not np.allclose(image.render("file: HARDER"), image.display)
    with pytest.raises(KeyError):
        image.render("no such preset")


def test_rle_round_trip_is_bit_exact(tmp_path):
    stored = chest_like(bits=12, seed=3)
    write_radiograph(tmp_path / "plain.dcm", stored, study_key="r")
    write_radiograph(tmp_path / "rle.dcm", stored, study_key="r", rle=True)
    rle = read_dicom(tmp_path / "rle.dcm")
    assert "RLE" in rle.meta.transfer_syntax
    np.testing.assert_array_equal(rle.values, read_dicom(tmp_path / "plain.dcm").values)
    np.testing.assert_array_equal(rle.values, stored.astype(np.float32))


def test_multi_frame_uses_the_first_frame_with_a_warning(tmp_path):
    frames = np.stack([chest_like(seed=0), chest_like(seed=1)])  # [frames, rows, cols]
    ds = build_radiograph_dataset(frames[0], study_key="mf")
    ds.NumberOfFrames = 2
    ds.PixelData = frames.astype("<u2").tobytes()
    save_dataset(ds, tmp_path / "mf.dcm")
    image = read_dicom(tmp_path / "mf.dcm")
    np.testing.assert_array_equal(image.values, frames[0].astype(np.float32))
    assert any("multi-frame" in w for w in image.meta.warnings)


def test_rgb_secondary_capture_becomes_grayscale(tmp_path):
    gray = (chest_like(bits=12) // 16).astype(np.uint8)
    rgb = np.stack([gray, gray, gray], axis=-1)  # [rows, cols, 3]
    ds = build_radiograph_dataset(gray, study_key="rgb", sop_class="SC", bits_stored=8)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.PixelData = rgb.tobytes()
    save_dataset(ds, tmp_path / "rgb.dcm")
    image = read_dicom(tmp_path / "rgb.dcm")
    np.testing.assert_allclose(image.values, gray.astype(np.float32), atol=0.01)
    assert any("colour" in w for w in image.meta.warnings)


@pytest.mark.parametrize(
    ("breaker", "reason"),
    [
        (lambda ds: delattr(ds, "PixelData"), "no pixel data"),
        (lambda ds: setattr(ds, "SOPClassUID", "1.2.840.10008.5.1.4.1.1.88.11"), "structured report"),
        (lambda ds: setattr(ds, "SOPClassUID", "1.2.840.10008.5.1.4.1.1.2"), "unsupported SOP class CT Image"),
        (lambda ds: setattr(ds, "Rows", 200), "header implies"),
        (lambda ds: delattr(ds, "SOPClassUID"), "unsupported SOP class"),
    ],
)
def test_broken_headers_are_rejected_with_a_reason(tmp_path, breaker, reason):
    ds = build_radiograph_dataset(chest_like(), study_key="bad")
    breaker(ds)
    if "SOPClassUID" not in ds:
        ds.file_meta.MediaStorageSOPClassUID = "1.2.3.4"
    save_dataset(ds, tmp_path / "bad.dcm")
    with pytest.raises(DicomRejected, match=reason):
        read_dicom(tmp_path / "bad.dcm")
    assert read_file(tmp_path / "bad.dcm").status.startswith(f"rejected: ")


def test_truncated_file_is_rejected(tmp_path):
    path = write_radiograph(tmp_path / "t.dcm", chest_like(), study_key="t")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 3000])
    assert read_file(path).status == "rejected: truncated file: pixel data runs past the end of the file"
    path.write_bytes(data[:300])  # cut inside the header
    assert read_file(path).status.startswith("rejected: ")


def test_sixty_thousand_square_header_is_refused_before_any_large_allocation(tmp_path):
    ds = build_radiograph_dataset(chest_like(), study_key="bomb")
    ds.Rows, ds.Columns = 60000, 60000  # 3.6 G pixels, 7.2 GB if decoded
    save_dataset(ds, tmp_path / "bomb.dcm")
    tracemalloc.start()
    record = read_file(tmp_path / "bomb.dcm")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert record.status == "rejected: image of 60000×60000 pixels exceeds the 40,000,000-pixel limit"
    assert peak < 20 * 1024**2
    # the limit is configurable: a tighter one refuses ordinary images too
    small = write_radiograph(tmp_path / "ok.dcm", chest_like(), study_key="ok")
    assert read_file(small, Limits(max_pixels=1000)).status.startswith("rejected: image of 96×80 pixels")


def test_random_bytes_png_renamed_dcm_and_file_without_extension(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "random.dcm").write_bytes(rng.bytes(4096))
    assert read_file(tmp_path / "random.dcm").status == (
        "rejected: not a DICOM, PNG or JPEG file (no DICM marker at byte 128)")
    (tmp_path / "empty.dcm").write_bytes(b"")
    assert read_file(tmp_path / "empty.dcm").status == "rejected: empty file"

    Image.fromarray((chest_like(bits=12) // 16).astype(np.uint8)).save(tmp_path / "image.png")
    (tmp_path / "image.png").rename(tmp_path / "renamed.dcm")
    with pytest.raises(DicomRejected, match="not a DICOM file \\(a PNG image\\)"):
        read_dicom(tmp_path / "renamed.dcm")
    png = read_file(tmp_path / "renamed.dcm")  # detected by content: accepted as a PNG view
    assert png.ok and png.kind == "png" and png.meta.view == "unknown"

    no_extension = write_radiograph(tmp_path / "IM0001", chest_like(), study_key="noext", view="LL")
    record = read_file(no_extension)
    assert record.ok and record.kind == "dicom" and record.meta.view == "LATERAL"


def test_metadata_never_carries_patient_identity(tmp_path):
    ds = build_radiograph_dataset(chest_like(), study_key="phi")
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "DOE^JANE^MARKER", "PID-MARKER-123", "19700101"
    ds.InstitutionName, ds.AccessionNumber = "MARKER HOSPITAL", "ACC-MARKER"
    save_dataset(ds, tmp_path / "phi.dcm")
    text = repr(read_dicom(tmp_path / "phi.dcm").meta.to_dict())
    for marker in ("MARKER", "DOE", "19700101", str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)):
        assert marker not in text


def test_a_max_side_read_equals_window_then_resize_when_the_window_does_not_clip(tmp_path):
    from mvcm_core.data.imageops import resize_longest

    stored = chest_like(rows=300, cols=260, bits=12)
    write_radiograph(tmp_path / "full.dcm", stored, study_key="s", photometric="MONOCHROME1", window=(2048, 4096))
    write_radiograph(tmp_path / "tight.dcm", stored, study_key="s", window=(800, 600))
    full, small = read_dicom(tmp_path / "full.dcm"), read_dicom(tmp_path / "full.dcm", max_side=64)
    assert small.display.shape == small.values.shape == (64, 55) and small.inverted
    np.testing.assert_allclose(small.display, resize_longest(full.display, 64), atol=1e-5)
    # a clipping window: only the clip edge is smoothed, the image is the same picture
    tight, tight_small = read_dicom(tmp_path / "tight.dcm"), read_dicom(tmp_path / "tight.dcm", max_side=64)
    difference = np.abs(tight_small.display - resize_longest(tight.display, 64))
    assert np.median(difference) < 1e-5 and difference.max() < 0.5
    assert read_dicom(tmp_path / "full.dcm", max_side=1000).display.shape == (300, 260)  # never enlarged


def test_pillow_keeps_freed_image_blocks_unless_the_environment_says_otherwise(monkeypatch):
    from PIL import Image

    from mvcm_core.data.imageops import PIL_BLOCKS_KEPT, keep_pil_blocks

    before = Image.core.get_blocks_max()
    try:
        Image.core.set_blocks_max(0)
        monkeypatch.setenv("PILLOW_BLOCKS_MAX", "0")
        assert keep_pil_blocks() == 0  # the user's own Pillow setting wins
        monkeypatch.delenv("PILLOW_BLOCKS_MAX")
        assert keep_pil_blocks() == PIL_BLOCKS_KEPT
        Image.core.set_blocks_max(PIL_BLOCKS_KEPT + 3)
        assert keep_pil_blocks() == PIL_BLOCKS_KEPT + 3  # never lowered
    finally:
        Image.core.set_blocks_max(before)


def test_jpeg_2000_reduction_never_goes_below_the_requested_side():
    from mvcm_core.data.dicom_j2k import levels_skipped, reduce_for

    assert reduce_for(1955, 1841, 128, levels=5) == 3  # 245 ≥ 128 > 123
    assert reduce_for(1955, 1841, 123, levels=5) == 4 and reduce_for(1955, 1841, 123, levels=2) == 2
    assert reduce_for(1955, 1841, 978, levels=5) == 1 and reduce_for(1955, 1841, 979, levels=5) == 0
    assert reduce_for(1955, 1841, 128, levels=0) == 0  # no wavelet levels to skip
    assert levels_skipped((1955, 1841), (245, 231)) == 3
    with pytest.raises(ValueError, match="no reduced band"):
        levels_skipped((1955, 1841), (240, 231))
