"""The app's handlers as plain functions (no browser, no server, a stub predictor where a model is needed)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from conftest import chest_like

from demo import about, api, ask, export, handlers, overlays, retrieve, teaching
from demo.session import SESSION_ROOT, Session, clear_session, drop_session_dir, ensure_workdir, session_dir
from mvcm_core.data.dicom_write import write_radiograph
from mvcm_core.inference import Answer, RetrievedReport

GRID = 4


class StubPredictor:
    """Answers ``yes`` about effusions and ``no`` otherwise; attention uniform over the fed views."""

    folder = None
    index = object()
    manifest: ClassVar[dict] = {
        "metrics": {"vqa": {"accuracy": 0.61, "n": 120}, "note": "test", "flag": True}
    }

    def __init__(self, in_distribution: bool | None = True) -> None:
        self.in_distribution = in_distribution
        self.calls: list[tuple[list[str], str]] = []

    def answer(self, study, question: str, top_k: int = 5) -> Answer:
        labels = [label for _, label in study]
        self.calls.append((labels, question))
        chosen = "yes" if "effusion" in question else "no"
        other = "no" if chosen == "yes" else "yes"
        fed = list(dict.fromkeys(labels))[:2]
        maps = {label: (np.full((GRID, GRID), 1.0 / (GRID * GRID * len(fed)))).tolist() for label in fed}
        maps[fed[0]][0][0] *= 3.0  # one hot spot
        return Answer(
            question=question,
            answer=chosen,
            probability=0.7,
            alternatives=[(chosen, 0.7), (other, 0.3)][:top_k],
            view_contributions={label: 0.1 for label in fed},
            attention_maps=maps,
            view_labels=labels,
            in_distribution=self.in_distribution,
            ood_score=None if self.in_distribution is None else 4.2,
        )

    def retrieve(self, study, k: int = 5) -> dict:
        reports = [
            RetrievedReport(
                rank=i + 1,
                score=0.9 - 0.1 * i,
                text=f"FINDINGS: finding {i}.\n\nIMPRESSION: impression {i}.",
                findings=[{"term": "pleural effusion", "side": "left"}],
                report_uid=f"R{i}",
                attribution="synthetic",
            )
            for i in range(k)
        ]
        return {"reports": reports, "in_distribution": self.in_distribution, "ood_score": 4.2}


@pytest.fixture()
def two_views(tmp_path) -> list[str]:
    write_radiograph(tmp_path / "pa.dcm", chest_like(), study_key="s", view="PA", series_number=1)
    write_radiograph(tmp_path / "lat.dcm", chest_like(seed=1), study_key="s", view="LL", series_number=2)
    return [str(tmp_path / "pa.dcm"), str(tmp_path / "lat.dcm")]


@pytest.fixture()
def loaded(two_views) -> Session:
    session = handlers.ingest(Session(), two_views)
    yield session
    clear_session(session)


def test_upload_groups_one_study_keeps_good_files_and_explains_rejected_ones(two_views, tmp_path):
    (tmp_path / "junk.bin").write_bytes(b"\x00" * 500)
    session = handlers.ingest(Session(), [*two_views, str(tmp_path / "junk.bin")])
    panel = handlers.study_panel(session)
    assert len(session.studies) == 1 and session.labels == ["PA", "LATERAL"]
    assert (
        panel.summary.startswith("1 study, 2 view(s): PA, LATERAL") and "1 file(s) rejected" in panel.summary
    )
    assert panel.rows[2][0] == "junk.bin" and panel.rows[2][1].startswith("rejected: not a DICOM")
    assert [row[1] for row in panel.rows[:2]] == ["ok", "ok"]
    assert [c for _, c in panel.gallery] == ["view 1: PA", "view 2: LATERAL"] and panel.choices == [
        panel.choice
    ]
    assert session.aliases[str(tmp_path / "junk.bin")] == "file 3"
    assert (
        panel.meta[0]["file"] == "pa.dcm"
        and panel.meta[0]["rows"] == 96
        and "PatientName" not in panel.meta[0]
    )


def test_more_than_six_files_are_rejected_with_a_reason(tmp_path):
    paths = [
        str(write_radiograph(tmp_path / f"{i}.dcm", chest_like(seed=i), study_key="s", instance_number=i + 1))
        for i in range(7)
    ]
    studies, records = handlers.read_upload(paths)
    assert len(studies[0].views) == 6 and records[6].reason == "more than 6 files in one upload"


def test_two_studies_are_announced_and_the_user_picks_one(tmp_path):
    write_radiograph(tmp_path / "a.dcm", chest_like(), study_key="a", view="PA")
    write_radiograph(tmp_path / "b1.dcm", chest_like(seed=1), study_key="b", view="PA", series_number=1)
    write_radiograph(tmp_path / "b2.dcm", chest_like(seed=2), study_key="b", view="LL", series_number=2)
    session = handlers.ingest(Session(), [str(tmp_path / n) for n in ("a.dcm", "b1.dcm", "b2.dcm")])
    panel = handlers.study_panel(session)
    assert "2 studies" in panel.summary and len(panel.choices) == 2
    first = next(i for i, c in enumerate(panel.choices) if "2 view(s)" in c)
    session.answers.append({"stale": True})
    session = handlers.select_study(session, panel.choices[first])
    assert session.selected == first and len(session.model_views()) == 2 and session.answers == []
    assert handlers.study_panel(session).choice == panel.choices[first]


def test_label_correction_reaches_the_model_and_the_captions(loaded):
    session = handlers.set_labels(loaded, ["LATERAL", "nonsense"])
    assert [label for _, label in session.model_views()] == ["LATERAL", "unknown"]
    captions = [c for _, c in handlers.study_panel(session).gallery]
    assert captions == ["view 1: LATERAL (corrected)", "view 2: unknown (corrected)"]


def test_windowing_and_invert_change_the_display_but_not_the_model_input(loaded):
    model_before = [p.copy() for p, _ in loaded.model_views()]
    plain = handlers.study_panel(loaded).gallery[0][0]
    session = handlers.set_display(loaded, "lung", True)
    shown = handlers.study_panel(session).gallery[0][0]
    lung = handlers.render_view(session.study.views[0], "lung")
    assert shown.shape == plain.shape and not np.array_equal(shown, plain)
    np.testing.assert_array_equal(shown.astype(int), 255 - lung.astype(int))
    assert all(np.array_equal(a, b) for a, (b, _) in zip(model_before, session.model_views()))
    assert handlers.set_display(session, "no-such-preset", False).preset == "file"


def test_overlay_blend_shape_and_opacity():
    gray = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (30, 1))  # [30, 25]
    rgb = np.repeat(gray[..., None], 3, axis=-1).astype(float)
    heat = overlays.upsample_grid(np.eye(4), 30, 25)
    assert heat.shape == (30, 25) and heat.max() == pytest.approx(1.0, abs=0.05)
    np.testing.assert_array_equal(overlays.blend(gray, heat, 0.0), rgb)
    ones, zeros = np.ones_like(heat), np.zeros_like(heat)
    full = overlays.blend(gray, ones, 1.0)
    np.testing.assert_allclose(
        full, np.rint(overlays.colormap(ones) * 255), atol=1
    )  # pure colour where heat = 1
    np.testing.assert_array_equal(
        overlays.blend(gray, zeros, 1.0), rgb
    )  # untouched where the model did not look
    half = overlays.blend(gray, ones, 0.5).astype(float)
    assert full.shape == (30, 25, 3) and full.dtype == np.uint8
    assert np.abs(half - (full.astype(float) + rgb) / 2).max() <= 1.0
    with pytest.raises(ValueError):
        overlays.blend(gray, heat[:, :20], 0.5)


def test_overlays_follow_the_views_and_skip_a_repeated_label():
    images = [
        np.full((20, 16), 100, np.uint8),
        np.full((20, 16), 100, np.uint8),
        np.full((8, 8), 9, np.uint8),
    ]
    grid = np.zeros((4, 4))
    grid[1, 1] = 0.5
    out = overlays.overlay_views(
        images, ["PA", "LATERAL", "PA"], {"PA": grid.tolist(), "LATERAL": (grid / 5).tolist()}, opacity=1.0
    )
    assert [img.shape for img, _ in out] == [(20, 16, 3), (20, 16, 3), (8, 8, 3)]
    assert "no attention map" in out[2][1] and "50% of the attention" in out[0][1]
    assert out[0][0].astype(int).sum() != out[1][0].astype(int).sum()  # global, not per-view, scaling


def test_ood_banner_text():
    assert "Out of distribution" in ask.ood_banner(False, 4.25) and "4.25" in ask.ood_banner(False, 4.25)
    assert ask.ood_banner(True, 0.1) == "" and ask.ood_banner(None, None) == ""


def test_answer_is_formatted_with_confidence_and_not_a_diagnosis(loaded):
    predictor = StubPredictor(in_distribution=False)
    result = ask.ask(loaded, predictor, "Is there a pleural effusion?", [], top_k=2, opacity=0.5)
    assert [m["role"] for m in result.history] == ["user", "assistant"]
    text = result.history[1]["content"]
    assert "**yes** (70% confidence)" in text and "Alternatives: no 30%" in text
    assert (
        "Not a diagnosis" in text and "Out of distribution" in text and "Out of distribution" in result.banner
    )
    assert result.confidences == {"yes": 0.7, "no": 0.3}
    assert result.contributions == [["PA", 0.1], ["LATERAL", 0.1]]
    assert len(result.overlays) == 2 and result.overlays[0][0].ndim == 3
    assert len(loaded.overlay_files) == 2 and all(Path(f).is_file() for f in loaded.overlay_files)
    assert predictor.calls[-1][0] == ["PA", "LATERAL"]
    with pytest.raises(ValueError, match="viewer-only"):
        ask.ask(loaded, None, "Is there a pleural effusion?", [])
    with pytest.raises(ValueError, match="Load a study"):
        ask.ask(Session(), predictor, "Is there a pleural effusion?", [])


def test_abcde_walk_through_asks_every_step_in_order(loaded):
    steps = ask.abcde_steps()
    assert steps[0][0].startswith("A") and {s[0][0] for s in steps} == set("ABCDE")
    results = list(ask.ask_sequence(loaded, StubPredictor(), steps, [{"role": "user", "content": "hi"}]))
    assert len(results) == len(steps) and len(results[-1].history) == 1 + 2 * len(steps)
    assert results[0].history[1]["content"].startswith("**A: Airway**")
    assert len(ask.redraw(loaded, 0.0)) == 2


def test_zip_holds_json_overlays_and_summary_without_file_names(tmp_path):
    write_radiograph(tmp_path / "DOE_JOHN_1960.dcm", chest_like(), study_key="z", view="PA")
    session = handlers.ingest(Session(), [str(tmp_path / "DOE_JOHN_1960.dcm")])
    with pytest.raises(ValueError, match="Nothing to download"):
        export.build_zip(session)
    ask.ask(session, StubPredictor(), "Is there a pleural effusion?", [])
    retrieve.retrieve(session, StubPredictor(), k=3)
    path = export.build_zip(session)
    assert path.parent == Path(session.workdir)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        document = json.loads(archive.read("results.json"))
        summary = archive.read("summary.md").decode()
        raw = b"".join(archive.read(n) for n in names if not n.endswith(".png")).decode()
    assert {"results.json", "summary.md"} <= set(names) and any(n.startswith("overlays/") for n in names)
    assert document["answers"][0]["answer"] == "yes" and len(document["retrievals"][0]["reports"]) == 3
    assert document["study"]["views"][0]["file"] == "file 1" and "DOE_JOHN" not in raw
    assert "Not a diagnosis" in summary and "Is there a pleural effusion?" in summary
    clear_session(session)


def test_clear_session_and_unload_delete_the_temp_dir(loaded, tmp_path):
    workdir = ensure_workdir(loaded)
    (workdir / "x.png").write_bytes(b"x")
    fresh = clear_session(loaded)
    assert not workdir.exists() and fresh.studies == [] and fresh.workdir == ""
    by_hash = ensure_workdir(Session(), "abc123")
    assert by_hash == session_dir("abc123") and by_hash.parent == SESSION_ROOT
    drop_session_dir("abc123")
    assert not by_hash.exists()
    outside = tmp_path / "keep"
    outside.mkdir()
    clear_session(Session(workdir=str(outside)))
    assert outside.exists()  # never deletes anything outside the session root


def test_retrieval_rows_sections_and_full_report(loaded):
    result = retrieve.retrieve(loaded, StubPredictor(), k=2, section="impression")
    assert result.rows == [
        [1, 0.9, "left pleural effusion", "impression 0."],
        [2, 0.8, "left pleural effusion", "impression 1."],
    ]
    assert retrieve.latest_rows(loaded, "findings")[0][3] == "finding 0."
    text = retrieve.select_report(loaded, 1)
    assert text.index("**Impression:**") < text.index("**Findings:**") and "Not a diagnosis" in text
    assert retrieve.split_sections("Just text.") == {"findings": "Just text.", "impression": ""}
    assert result.thumbnails == [] and "Out of distribution" not in result.banner


def test_thumbnails_only_for_existing_files(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((300, 200), np.uint8)).save(tmp_path / "t.png")
    reports = [
        {"rank": 1, "extra": {"thumbnail": "t.png"}},
        {"rank": 2, "extra": {"thumbnail": "missing.png"}},
        {"rank": 3, "extra": {}},
    ]
    thumbs = retrieve.thumbnails(reports, tmp_path)
    assert len(thumbs) == 1 and thumbs[0][0].shape == (256, 171) and thumbs[0][1] == "report 1"


def _example(tmp_path, two_views) -> Path:
    folder = tmp_path / "examples" / "CASE1"
    folder.mkdir(parents=True)
    for src, name in zip(two_views, ("PA.dcm", "LL.dcm")):
        (folder / name).write_bytes(Path(src).read_bytes())
    (folder / "report.txt").write_text("FINDINGS: Left effusion.\n\nIMPRESSION: Effusion.\n")
    (folder / "findings.json").write_text(
        json.dumps({"findings": [{"term": "pleural effusion", "side": "left"}, {"term": "nodule"}]})
    )
    (tmp_path / "examples" / "incomplete").mkdir()
    return folder.parent


def test_examples_are_recognised_by_content_and_revealed_with_right_and_wrong(tmp_path, two_views):
    examples = teaching.find_examples(_example(tmp_path, two_views))
    assert [e.name for e in examples] == ["CASE1"]
    session = handlers.ingest(Session(), two_views, teaching.example_matcher(examples))
    assert session.example == "CASE1"
    text, marks = teaching.reveal(session, StubPredictor(), examples)
    labelled = {t.split(" (")[0]: label for t, label in marks if label}
    assert labelled["pleural effusion"] == "right" and labelled["nodule"] == "wrong"  # stub says no
    assert (
        labelled["cardiomegaly"] == "right" and len(labelled) == 6
    )  # effusion asked once, not again as a probe
    assert "Left effusion." in text and "got 5 of 6" in text and "Not a diagnosis" in text
    other = handlers.ingest(Session(), two_views[:1], teaching.example_matcher(examples))
    assert other.example is None
    with pytest.raises(ValueError, match="shipped example"):
        teaching.reveal(other, StubPredictor(), examples)
    clear_session(session)


def test_about_reads_card_metrics_and_plots(tmp_path):
    from PIL import Image

    stub = StubPredictor()
    assert about.metric_rows(stub.manifest) == [["vqa.accuracy", 0.61], ["vqa.n", 120.0], ["note", "test"]]
    assert "No model card" in about.model_card(stub) and "viewer" in about.model_card(None)
    stub.folder = tmp_path
    (tmp_path / "MODEL_CARD.md").write_text("# Card\nintended use")
    (tmp_path / "eval").mkdir()
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "eval" / "vqa_test_confusions.png")
    assert about.model_card(stub).startswith("# Card")
    assert [(p.shape, c) for p, c in about.eval_plots(stub)] == [((10, 12, 3), "vqa test confusions")]


def test_api_json_uses_aliases_even_inside_reasons(tmp_path):
    write_radiograph(tmp_path / "SMITH_JANE.dcm", chest_like(), study_key="s", view="PA")
    (tmp_path / "copy.dcm").write_bytes((tmp_path / "SMITH_JANE.dcm").read_bytes())
    out = api.load_study([str(tmp_path / "SMITH_JANE.dcm"), str(tmp_path / "copy.dcm")])
    dumped = json.dumps(out)
    assert "SMITH" not in dumped and "copy.dcm" not in dumped
    assert out["files"][1] == {
        "file": "file 2",
        "kind": "dicom",
        "status": "rejected: duplicate of file 1 (same instance)",
    }
    assert out["studies"][0]["views"][0]["file"] == "file 1"
    with pytest.raises(ValueError, match="viewer-only"):
        api.ask(None, [str(tmp_path / "SMITH_JANE.dcm")], "Is there a pleural effusion?")
