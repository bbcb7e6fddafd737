"""The 3-D phantom and renderer: geometry, determinism, findings, DICOM output and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mvcm_core.data.findings import CANONICAL_TERMS, Finding
from mvcm_core.data.phantom.geometry import ViewGeometry
from mvcm_core.data.phantom.primitives import polyline_tubes, render_ellipsoids, render_tubes
from mvcm_core.data.phantom.render import render_study
from mvcm_core.data.phantom.visibility import VISIBILITY, visible_views

SIZE = 64


def test_same_height_maps_to_same_row_in_both_views():
    pa = ViewGeometry("PA", detector_cm=-13.0, size=256)
    ll = ViewGeometry("LL", detector_cm=18.0, size=256)
    point = np.array([-3.0, 2.0, 5.0])  # right of midline: far from the left-lateral detector
    row_pa, _, mag_pa = pa.project(point)
    row_ll, _, mag_ll = ll.project(point)
    height = lambda row, view: (view.centre_z_cm + view.field_cm / 2 - (row + 0.5) * view.pixel_cm)  # noqa: E731
    assert (height(row_pa, pa) - pa.centre_z_cm) / mag_pa == pytest.approx(
        (height(row_ll, ll) - ll.centre_z_cm) / mag_ll, abs=1e-9)
    assert mag_ll > mag_pa > 1.0  # this point is farther from the lateral detector


def test_analytic_chords_match_closed_forms():
    view = ViewGeometry("PA", detector_cm=-13.0, size=256)
    mag = view.magnification(13.0)
    sphere = render_ellipsoids(view, [[0.0, 0.0, -3.0]], [[2.0, 2.0, 2.0]], [1.0])
    assert sphere.max() == pytest.approx(4.0, rel=0.01)  # diameter through the centre
    assert sphere.sum() * view.pixel_cm**2 == pytest.approx(4 / 3 * np.pi * 8 * mag**2, rel=0.01)
    rod = render_tubes(polyline_tubes(np.array([[-5.0, 0.0, -3.0], [5.0, 0.0, -3.0]]), 1.0, 1.0, 1.0), view)
    assert rod.max() == pytest.approx(2.0, rel=0.01)


def test_render_is_deterministic_and_well_formed():
    findings = [Finding("pleural effusion", side="left", severity="moderate")]
    first = render_study(findings, seed=3, size=SIZE)
    second = render_study(findings, seed=3, size=SIZE)
    for view in ("PA", "LL"):
        assert first[view]["stored"].shape == (SIZE, SIZE)
        assert first[view]["stored"].dtype == np.uint16 and first[view]["stored"].max() <= 4095
        np.testing.assert_array_equal(first[view]["stored"], second[view]["stored"])
    assert first["meta"]["placements"][0]["placements"][0]["volume_ml"] > 150


def test_left_effusion_is_denser_on_the_left_of_the_patient():
    normal = render_study([Finding("normal")], seed=5, size=SIZE, anatomy_id=0)
    left = render_study([Finding("pleural effusion", side="left", severity="large")], seed=5, size=SIZE, anatomy_id=0)
    delta = left["PA"]["path"] - normal["PA"]["path"]
    # PA is displayed as if facing the patient: the patient's left is on the image right
    assert delta[:, SIZE // 2:].sum() > 20 * max(delta[:, : SIZE // 2].sum(), 1e-3)


def test_small_effusion_changes_the_lateral_recess_more_than_the_pa():
    normal = render_study([Finding("normal")], seed=6, size=SIZE, anatomy_id=1)
    small = render_study([Finding("pleural effusion", side="right", severity="small")], seed=6, size=SIZE,
                         anatomy_id=1)
    peak = {v: float((small[v]["path"] - normal[v]["path"]).max()) for v in ("PA", "LL")}
    assert peak["LL"] > 1.2 * peak["PA"], peak


@pytest.mark.parametrize("term", CANONICAL_TERMS)
def test_every_canonical_term_renders_and_has_a_visibility_rule(term):
    out = render_study([Finding(term, side="right" if term != "normal" else None)], seed=1, size=32, anatomy_id=0)
    assert np.isfinite(out["PA"]["path"]).all() and np.isfinite(out["LL"]["path"]).all()
    assert term in VISIBILITY
    assert out["meta"]["placements"][0]["rendered"]


def test_visibility_rules_follow_the_reference():
    assert visible_views(Finding("pleural effusion", side="left", severity="small")) == ["LL"]
    assert visible_views(Finding("pneumothorax", side="left")) == ["PA"]
    assert visible_views(Finding("opacity", side="left", zone="retrocardiac")) == ["LL"]


def test_bad_size_is_a_one_line_error():
    with pytest.raises(ValueError, match="size"):
        render_study([], seed=0, size=8)


def test_cli_writes_studies_that_inspect_reads(tmp_path, capsys):
    from mvcm_core.cli.main import main

    out = tmp_path / "phantom"
    assert main(["phantom", "--studies", "3", "--out", str(out), "--seed", "0", "--size", "64",
                 "--source", "random", "--quiet", "--pool", "2"]) == 0
    studies = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(studies) == 3
    for folder in studies:
        names = {p.name for p in folder.iterdir()}
        assert {"PA.dcm", "LL.dcm", "PA.png", "LL.png", "report.txt", "findings.json"} <= names
        doc = json.loads((folder / "findings.json").read_text())
        assert doc["findings"] and "visibility" in doc and doc["render"]["size"] == 64
    capsys.readouterr()
    assert main(["inspect", str(out), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    dicom_studies = [s for s in listing["studies"] if s["views"] and "unknown" not in s["views"]]
    assert len(dicom_studies) == 3
    assert all(sorted(s["views"]) == ["LATERAL", "PA"] for s in dicom_studies)
    dicoms = [f for f in listing["files"] if f["file"].endswith(".dcm")]
    assert len(dicoms) == 6 and all(f["status"] == "ok" for f in dicoms)
    # inspect also reports the sidecars: PNG previews as an "uploaded images" study, report.txt and
    # findings.json as rejected non-images (see docs/phantom.md, "Known limitations")


def test_plan_study_makes_the_placements_of_the_render_and_depth_runs_front_to_back():
    from mvcm_core.data.phantom.render import lesion_depths, plan_study, render_study

    findings = [Finding("opacity", side="left", lobe="lower"), Finding("nodule", side="right", lobe="upper"),
                Finding("pleural effusion", side="right", severity="small")]
    study = render_study(findings, seed=11, size=32, pool=2)
    anat, plan = plan_study(findings, seed=11, pool=2)
    assert plan.records == study["meta"]["placements"]
    depths = study["meta"]["depths"]
    assert [d["term"] for d in depths] == ["opacity", "nodule"] and depths == lesion_depths(plan.records, anat)
    assert all(-1.2 < d["depth"] < 1.2 for d in depths)
    _, y_centre, _, half_depth = anat.lung_ellipse(1, np.array(0.0))  # +y is posterior (the PA detector is at -y)
    behind = [{"term": "mass", "placements": [{"side": "left", "centre_cm": [5.0, float(y_centre + 0.5 * half_depth), 0.0]}]}]
    assert lesion_depths(behind, anat)[0]["depth"] == pytest.approx(0.5, abs=1e-3)
    assert anat.front_y() < y_centre
