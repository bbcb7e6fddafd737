"""No patient identifier leaves an upload: not in a response, the page, a log line at DEBUG, or a file on disk.

DICOMs whose PatientName, PatientID, PatientBirthDate, AccessionNumber, InstitutionName (and
ReferringPhysicianName) hold marker strings, and whose file names hold another marker, go through
every API endpoint (success and error paths, a rejected file) and, when Chromium is installed, the
browser UI (upload, ask, retrieve, results zip). Afterwards, with every session ended, every log
record (root logger at DEBUG, pydicom's own debug mode switched on), stdout / stderr, every response,
the page's HTML, the zip and every file left under Gradio's cache and the session temp root are
searched for the markers. (``tests/test_app_client.py`` covers the same responses more briefly.)
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
import zipfile
from pathlib import Path

import pytest
from app_fixtures import PHI_MARKERS, build_served, launched, phi_study

pytestmark = pytest.mark.slow
FILE_MARKER = "ZZPHIFILE"
CHROMIUM = "/usr/bin/chromium"


class Recorder(logging.Handler):
    """Keeps every record's formatted message (and its exception text)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.lines.append(f"{record.name} {record.levelname} {text}")


def _files_and_text(folders: list[Path]) -> tuple[list[Path], str]:
    """Every file below ``folders`` and all their bytes (zips unpacked) as latin-1 text."""
    files = [p for folder in folders if folder.exists() for p in folder.rglob("*") if p.is_file()]
    parts = []
    for path in files:
        data = path.read_bytes()
        parts.append(path.name + "\n" + data.decode("latin-1"))
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                parts += [archive.read(n).decode("latin-1") for n in archive.namelist()]
    return files, "\n".join(parts)


def _browser_session(url: str, paths: list[Path]) -> tuple[str, bytes]:
    """Upload, ask, retrieve and download the zip in headless Chromium; returns (page HTML, zip bytes)."""
    import httpx
    from playwright.sync_api import sync_playwright

    from test_browser import CHROMIUM_ARGS

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page()
        page.set_default_timeout(120_000)
        page.goto(url)
        page.locator("#study-files input[type=file]").set_input_files([str(p) for p in paths])
        page.locator("#study-summary").get_by_text("1 study, 2 view(s)").wait_for()
        page.locator("#question textarea").fill("Is there a pleural effusion?")
        page.locator("#question textarea").press("Enter")
        page.locator("#chat").get_by_text("Not a diagnosis", exact=False).first.wait_for()
        page.get_by_role("tab", name="Similar reports").click()
        page.locator("#retrieve-button").click()
        page.locator("#retrieved-report").get_by_text("Report 1", exact=False).wait_for()
        page.get_by_text("Technical metadata", exact=False).first.click()
        page.get_by_role("tab", name="Download").click()
        page.get_by_role("button", name="Build the results zip").click()
        link = page.locator("#results-zip a").first
        link.wait_for()
        zipped = httpx.get(httpx.URL(url).join(link.get_attribute("href")), timeout=60).content
        html = page.content()
        page.close()  # the tab closes: demo.unload drops the session's uploads and temp dir
        browser.close()
    return html, zipped


def test_no_marker_in_any_response_page_log_line_or_file_left(tmp_path, monkeypatch, capfd):
    import pydicom
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    import demo.session as session_module
    from demo.app import build_demo
    from mvcm_core.inference import Predictor

    gradio_dir, session_root = tmp_path / "gradio", tmp_path / "sessions"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(gradio_dir))
    monkeypatch.setattr(session_module, "SESSION_ROOT", session_root)
    recorder, root = Recorder(), logging.getLogger()
    old_level = root.level
    root.addHandler(recorder)
    root.setLevel(logging.DEBUG)
    logging.captureWarnings(True)
    try:
        checkpoint, _ = build_served(tmp_path / "served")
        folder = tmp_path / FILE_MARKER
        folder.mkdir()
        paths = [p.rename(p.with_name(f"{FILE_MARKER}_{p.name}")) for p in phi_study(folder)]
        ct = pydicom.dcmread(paths[0])
        ct.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # a CT image: rejected, with PHI in its header
        ct.save_as(folder / f"{FILE_MARKER}_CT.dcm")
        (folder / f"{FILE_MARKER}_notes.txt").write_text(PHI_MARKERS["PatientName"])
        predictor = Predictor.from_pretrained(checkpoint)
        pydicom.config.debug(True)  # an operator debugging pydicom: the app must switch its value dumps off
        recorder.lines.clear()  # from here on every record is the app's (the files were written above)
        demo = build_demo(predictor, examples_root=str(tmp_path / "none"))
        with launched(demo) as url:
            client = Client(url, verbose=False, download_files=False, analytics_enabled=False)
            files = [handle_file(str(p)) for p in paths]
            odd = [*files, handle_file(str(folder / f"{FILE_MARKER}_CT.dcm"))]
            responses = [
                client.predict(files=odd, api_name="/load_study"),
                client.predict(files=files, question="Is there a pleural effusion?", top_k=5, api_name="/ask"),
                client.predict(files=files, k=3, api_name="/retrieve"),
            ]
            errors = []
            for kwargs in (
                {"files": [handle_file(str(folder / f"{FILE_MARKER}_notes.txt"))], "k": 2, "api_name": "/retrieve"},
                {"files": files, "question": " ", "top_k": 5, "api_name": "/ask"},
                {"files": [handle_file(str(folder / f"{FILE_MARKER}_CT.dcm"))], "question": "Is it?", "top_k": 5,
                 "api_name": "/ask"},
            ):
                with pytest.raises(AppError) as caught:
                    client.predict(**kwargs)
                errors.append(str(caught.value))
            client.close()
            html, zipped = _browser_session(url, paths) if Path(CHROMIUM).is_file() else ("", b"")
            time.sleep(2.0)  # heartbeats close; unload events run
            left, disk = _files_and_text([gradio_dir, session_root])
            uploads_left = [p for p in left if p.suffix in (".dcm", ".txt")]
    finally:
        pydicom.config.debug(False)
        logging.captureWarnings(False)
        root.removeHandler(recorder)
        root.setLevel(old_level)
    out, err = capfd.readouterr()
    assert responses[0]["files"][2]["status"].startswith("rejected: unsupported SOP class CT Image Storage")
    assert any("No usable image" in e for e in errors) and any("empty" in e for e in errors)
    assert uploads_left == [], uploads_left  # every uploaded file is gone once its requests are done
    zip_text = ""
    if zipped:
        with zipfile.ZipFile(io.BytesIO(zipped)) as archive:
            zip_text = "\n".join(archive.read(n).decode("latin-1") for n in archive.namelist())
        assert "results.json" in zipfile.ZipFile(io.BytesIO(zipped)).namelist()
    print(f"\nprivacy: {len(recorder.lines)} log records, {len(left)} files left on disk, "
          f"browser {'driven' if html else 'skipped (no chromium)'}")
    assert len(recorder.lines) > 10  # the DEBUG capture did capture (httpx, gradio, asyncio ...)
    places = {
        "responses": json.dumps(responses) + "\n".join(errors),
        "logs": "\n".join(recorder.lines),
        "stdout/stderr": out + err,
        "files on disk": disk,
        "results zip": zip_text,
        "page HTML": html,
    }
    for where, text in places.items():
        for marker in PHI_MARKERS.values():
            assert marker not in text, f"{marker!r} found in {where}"
        if where != "page HTML":  # the page's file list shows the uploader their own file names
            assert FILE_MARKER not in text, f"an uploaded file name found in {where}"
    assert os.environ.get("GRADIO_TEMP_DIR") == str(gradio_dir)
