"""The app shell: pure handlers and the Blocks construction."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import chest_like

from demo import handlers
from mvcm_core.data.dicom_write import write_radiograph


def test_upload_keeps_good_files_and_explains_bad_ones(tmp_path):
    write_radiograph(tmp_path / "pa.dcm", chest_like(), study_key="s", view="PA", series_number=1)
    write_radiograph(tmp_path / "lat.dcm", chest_like(seed=1), study_key="s", view="LL", series_number=2)
    (tmp_path / "junk.bin").write_bytes(b"\x00" * 500)
    paths = [tmp_path / "pa.dcm", tmp_path / "lat.dcm", tmp_path / "junk.bin"]
    studies, rows, summary = handlers.load_upload([str(p) for p in paths])
    assert len(studies) == 1 and summary.startswith("1 study, 2 view(s): PA, LATERAL")
    assert "1 file(s) rejected" in summary
    assert rows[2][:2] == ["junk.bin", "rejected: not a DICOM, PNG or JPEG file (no DICM marker at byte 128)"]
    items = handlers.gallery_items(studies[0], "lung")
    assert [caption for _, caption in items] == ["view 1: PA", "view 2: LATERAL"]
    assert items[0][0].dtype == np.uint8 and items[0][0].shape == (96, 80)


def test_two_studies_are_announced_not_merged(tmp_path):
    write_radiograph(tmp_path / "a.dcm", chest_like(), study_key="a")
    write_radiograph(tmp_path / "b.dcm", chest_like(), study_key="b")
    studies, _, summary = handlers.load_upload([str(tmp_path / "a.dcm"), str(tmp_path / "b.dcm")])
    assert len(studies) == 2 and "2 studies" in summary


def test_empty_upload():
    assert handlers.load_upload(None) == (
        [],
        [],
        "Upload the DICOM files (or PNG / JPEG images) of one study.",
    )


def test_blocks_build_and_expose_only_the_three_named_endpoints():
    from demo.app import build_demo

    demo = build_demo(None)  # viewer-only app: builds without a checkpoint
    public = {
        dep.get("api_name") for dep in demo.config["dependencies"] if dep.get("api_visibility") == "public"
    }
    assert public == {"load_study", "ask", "retrieve"}
    others = {
        dep.get("api_visibility")
        for dep in demo.config["dependencies"]
        if dep.get("api_name") not in public and not str(dep.get("api_name")).startswith("load_example")
    }
    assert others == {"private"}  # every UI event is private (gr.Examples' loaders are "undocumented")


def test_ui_errors_warn_and_keep_outputs_while_api_errors_raise():
    import gradio as gr

    from demo.wiring import app_errors, warns

    def bad() -> None:
        raise ValueError("the question is empty")

    with pytest.warns(UserWarning, match="the question is empty"):
        kept = warns(2)(bad)()
    assert kept == [gr.skip(), gr.skip()]
    with pytest.raises(gr.Error, match="the question is empty"):
        app_errors(bad)()
