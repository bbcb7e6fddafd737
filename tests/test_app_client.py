"""The launched app driven through ``gradio_client``: named endpoints equal the Predictor; no PHI leaks."""

from __future__ import annotations

import json
import os

import pytest
from app_fixtures import PHI_MARKERS, build_served, examples_root, launched, phi_study

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from mvcm_core.inference import Predictor

    root = tmp_path_factory.mktemp("app")
    checkpoint, study = build_served(root)
    return Predictor.from_pretrained(checkpoint), study, examples_root(study, root)


@pytest.fixture(scope="module")
def app(served):
    from gradio_client import Client

    from demo.app import build_demo

    predictor, _, examples = served
    demo = build_demo(predictor, examples_root=str(examples))
    with launched(demo) as url:
        client = Client(url, verbose=False, download_files=False, analytics_enabled=False)
        yield url, client
        client.close()


def _files(paths):
    from gradio_client import handle_file

    return [handle_file(str(p)) for p in paths]


def _jsonable(value):
    return json.loads(json.dumps(value))


def test_named_endpoints_equal_the_predictor(served, app):
    predictor, study, _ = served
    _, client = app
    files = _files([study / "PA.dcm", study / "LL.dcm"])
    loaded = client.predict(files=files, api_name="/load_study")
    assert loaded["summary"].startswith("1 study, 2 view(s)") and [f["status"] for f in loaded["files"]] == [
        "ok",
        "ok",
    ]
    assert [v["label"] for v in loaded["studies"][0]["views"]] == ["PA", "LATERAL"]
    assert [v["file"] for v in loaded["studies"][0]["views"]] == ["file 1", "file 2"]

    question = "Is there a pleural effusion?"
    answer = client.predict(files=files, question=question, top_k=3, api_name="/ask")
    expected = _jsonable(predictor.answer([study / "PA.dcm", study / "LL.dcm"], question, top_k=3).to_dict())
    assert {k: answer[k] for k in expected} == expected
    assert "Not a diagnosis" in answer["disclaimer"] and len(answer["alternatives"]) == 3

    retrieved = client.predict(files=files, k=4, api_name="/retrieve")
    direct = predictor.retrieve(study, k=4)
    assert retrieved["reports"] == _jsonable([r.to_dict() for r in direct["reports"]])
    assert [r["rank"] for r in retrieved["reports"]] == [1, 2, 3, 4] and retrieved["k"] == 4


def test_bad_requests_become_one_line_app_errors(served, app, tmp_path):
    from gradio_client.exceptions import AppError

    _, study, _ = served
    _, client = app
    with pytest.raises(AppError, match="empty"):
        client.predict(files=_files([study / "PA.dcm"]), question="   ", top_k=5, api_name="/ask")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(AppError, match="No usable image"):
        client.predict(files=_files([tmp_path / "notes.txt"]), k=2, api_name="/retrieve")
    rejected = client.predict(files=_files([tmp_path / "notes.txt"]), api_name="/load_study")
    assert rejected["files"] == [
        {"file": "file 1", "kind": "unknown", "status": "rejected: not a DICOM file (only 12 bytes)"}
    ]


def test_no_patient_identifier_reaches_any_response_or_the_page(served, app, tmp_path):
    import httpx

    url, client = app
    folder = tmp_path / "ZZPHIFILE"
    folder.mkdir()
    paths = phi_study(folder)
    named = [p.rename(p.with_name(f"ZZPHIFILE_{p.name}")) for p in paths]
    files = _files(named)
    responses = [
        client.predict(files=files, api_name="/load_study"),
        client.predict(files=files, question="Is there a pleural effusion?", top_k=5, api_name="/ask"),
        client.predict(files=files, k=3, api_name="/retrieve"),
    ]
    assert responses[0]["studies"][0]["views"][0]["sop_class"]  # the metadata is there, just PHI-free
    fetched = [httpx.get(url.rstrip("/") + path, timeout=10) for path in ("/", "/config", "/gradio_api/info")]
    assert [r.status_code for r in fetched] == [200, 200, 200] and "load_study" in fetched[2].text
    pages = [r.text for r in fetched]
    blob = json.dumps(responses) + "\n".join(pages)
    for marker in [*PHI_MARKERS.values(), "ZZPHIFILE", "ZZPHIMARKER"]:
        assert marker not in blob, marker


def test_ui_handlers_leak_no_identifier_into_panels_answers_or_the_zip(served, tmp_path):
    import zipfile

    from demo import ask, export, handlers, retrieve
    from demo.session import Session, clear_session

    predictor = served[0]
    paths = phi_study(tmp_path)
    session = handlers.ingest(Session(), paths)
    panel = handlers.study_panel(session)
    result = ask.ask(session, predictor, "Is there a pleural effusion?", [])
    found = retrieve.retrieve(session, predictor, 2)
    archive = export.build_zip(session)
    with zipfile.ZipFile(archive) as zipped:
        packed = b"".join(zipped.read(n) for n in zipped.namelist()).decode("latin-1")
    blob = (
        json.dumps(
            [
                panel.rows,
                panel.summary,
                panel.meta,
                panel.choices,
                result.history,
                found.rows,
                found.report,
                session.answers,
                session.retrievals,
            ],
            default=str,
        )
        + packed
    )
    for marker in PHI_MARKERS.values():
        assert marker not in blob, marker
    clear_session(session)
