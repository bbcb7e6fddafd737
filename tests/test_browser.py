"""Headless Chromium drives the app: upload a 2-view DICOM study, ask, see overlays, retrieve, screenshot.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and ``pip install playwright``; never
``playwright install``. Skipped with a reason when either is missing. Run:
``pytest -m browser tests/test_browser.py -s`` (``-s`` prints the screenshot path).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; never `playwright install`)")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def app(browser, tmp_path_factory):
    from app_fixtures import build_served, examples_root, launched

    from demo.app import build_demo
    from mvcm_core.inference import Predictor

    root = tmp_path_factory.mktemp("browser")
    checkpoint, study = build_served(root)
    demo = build_demo(Predictor.from_pretrained(checkpoint), examples_root=str(examples_root(study, root)))
    with launched(demo) as url:
        yield url, study


def test_upload_ask_overlays_retrieve_and_screenshot(browser, app, tmp_path):
    url, study = app
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    external: list[str] = []
    page.on(
        "request",
        lambda r: (
            external.append(r.url) if not r.url.startswith(("http://127.0.0.1", "data:", "blob:")) else None
        ),
    )
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.locator("#study-files input[type=file]").set_input_files(
        [str(study / "PA.dcm"), str(study / "LL.dcm")]
    )
    page.locator("#study-summary").get_by_text("1 study, 2 view(s): PA, LATERAL").wait_for()
    assert page.locator("#views img").count() >= 2

    page.locator("#question textarea").fill("Is there a pleural effusion?")
    page.locator("#question textarea").press("Enter")
    page.locator("#chat").get_by_text("Not a diagnosis", exact=False).first.wait_for()
    page.locator("#overlays img").first.wait_for()
    assert page.locator("#overlays img").count() >= 2
    assert "confidence" in page.locator("#chat").inner_text()

    page.get_by_role("tab", name="Similar reports").click()
    page.locator("#retrieve-button").click()
    page.locator("#retrieved-report").get_by_text("Report 1", exact=False).wait_for()
    assert "synthetic test report" in page.locator("#retrieved-report").inner_text()
    assert (
        page.locator("#retrieved").get_by_text("synthetic", exact=False).count() == 0
    )  # table: no attribution
    assert page.locator("#retrieved").get_by_text("0.", exact=False).count() >= 5  # k = 5 scored rows

    shot = tmp_path / "mvcm-app.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nscreenshot: {shot}")
    keep = os.environ.get("MVCM_SCREENSHOT_DIR")  # optional: keep a copy outside pytest's tmp_path
    if keep:
        shutil.copy(shot, Path(keep) / shot.name)
    assert shot.stat().st_size > 10_000
    assert external == []  # nothing leaves the machine (no fonts, analytics or CDNs)
    from demo.session import SESSION_ROOT

    before = len(list(SESSION_ROOT.iterdir()))
    page.close()  # the tab closes: demo.unload deletes this session's temp dir
    for _ in range(40):
        if len(list(SESSION_ROOT.iterdir())) < before:
            break
        time.sleep(0.5)
    assert len(list(SESSION_ROOT.iterdir())) == before - 1


def test_example_reveal_abcde_zip_and_clear_session(browser, app):
    import io
    import zipfile

    import httpx

    from demo.session import SESSION_ROOT

    url, study = app
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.get_by_role("tab", name="Teaching").click()
    page.get_by_text(study.name, exact=True).first.click()
    page.locator("#study-summary").get_by_text("shipped example", exact=False).wait_for()
    page.locator("#reveal").click()
    page.locator("#reference-report").get_by_text("presence questions right", exact=False).wait_for()
    assert "Reference findings" in page.locator("#reference-report").inner_text()

    page.get_by_role("tab", name="Ask").click()
    page.locator("#abcde").click()
    page.locator("#chat").get_by_text("E: Everything else", exact=False).first.wait_for()
    assert "A: Airway" in page.locator("#chat").inner_text()

    page.get_by_role("tab", name="Download").click()
    page.get_by_role("button", name="Build the results zip").click()
    link = page.locator("#results-zip a").first
    link.wait_for()
    zipped = httpx.get(httpx.URL(url).join(link.get_attribute("href")), timeout=30)
    names = zipfile.ZipFile(io.BytesIO(zipped.content)).namelist()
    assert {"results.json", "summary.md"} <= set(names) and any(n.startswith("overlays/") for n in names)
    before = {p.name for p in SESSION_ROOT.iterdir()}
    page.locator("#clear-session").click()
    page.locator("#study-summary").get_by_text("Upload the DICOM files", exact=False).wait_for()
    assert len({p.name for p in SESSION_ROOT.iterdir()}) == len(before) - 1  # this session's temp dir is gone
    page.close()
