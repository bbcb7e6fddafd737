"""Every request bound at its limit (accepted) and one over (refused with one line); crowds on loopback."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import chest_like

from demo import api, ask, handlers
from demo.session import AppLimits, RateLimiter, UploadTracker
from mvcm_core.data.dicom_write import build_radiograph_dataset, save_dataset, write_radiograph


def _study(folder, count=2, rows=64, cols=56):
    return [
        str(write_radiograph(folder / f"{i}.dcm", chest_like(rows, cols, seed=i), study_key="s",
                             view="PA" if i == 0 else "LL", series_number=i + 1, instance_number=i + 1))
        for i in range(count)
    ]


def _one_line(reason: str) -> bool:
    return reason.isprintable() and 0 < len(reason) < 200


def test_limits_come_from_the_environment_and_bad_values_are_one_line_errors():
    limits = AppLimits.from_env({"MVCM_MAX_FILES": "3", "MVCM_MAX_FILE_MB": "1.5", "MVCM_RATE_BURST": "4"})
    assert (limits.max_files, limits.max_file_bytes, limits.rate_burst) == (3, int(1.5 * 1024**2), 4)
    assert AppLimits.from_env({}) == AppLimits()
    with pytest.raises(ValueError, match=r"^MVCM_MAX_PIXELS='lots' is not a number$"):
        AppLimits.from_env({"MVCM_MAX_PIXELS": "lots"})
    with pytest.raises(ValueError, match="must be positive"):
        AppLimits.from_env({"MVCM_QUEUE_SIZE": "0"})


def test_file_count_at_the_bound_and_one_over(tmp_path):
    paths = _study(tmp_path, 3)
    studies, records = handlers.read_upload(paths[:2], AppLimits(max_files=2))
    assert [r.status for r in records] == ["ok", "ok"] and len(studies[0].views) == 2
    studies, records = handlers.read_upload(paths, AppLimits(max_files=2))
    assert [r.ok for r in records] == [True, True, False]
    assert records[2].reason == "more than 2 files in one upload"


def _dicom_of_exact_size(path, size):
    ds = build_radiograph_dataset(chest_like(32, 32), study_key="size")
    save_dataset(ds, path)
    pad = size - path.stat().st_size - 12  # a private OB element: 12 header bytes + value
    ds.add_new(0x00091010, "OB", b"\0" * pad)
    save_dataset(ds, path)
    assert path.stat().st_size == size
    return path


def test_file_size_at_the_bound_and_one_byte_over(tmp_path):
    limit = AppLimits(max_file_mb=1.0)
    at = _dicom_of_exact_size(tmp_path / "at.dcm", 1024**2)
    over = _dicom_of_exact_size(tmp_path / "over.dcm", 1024**2 + 2)
    assert handlers.read_upload([at], limit)[1][0].status == "ok"
    reason = handlers.read_upload([over], limit)[1][0].reason
    assert reason == "file is 1,048,578 bytes, above the 1,048,576-byte limit" and _one_line(reason)


def test_png_uploads_obey_the_file_size_bound_too(tmp_path):
    from PIL import Image

    path = tmp_path / "view.png"
    Image.fromarray((np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64)).save(path)
    size = path.stat().st_size
    assert handlers.read_upload([path], AppLimits(max_file_mb=size / 1024**2))[1][0].status == "ok"
    reason = handlers.read_upload([path], AppLimits(max_file_mb=(size - 1) / 1024**2))[1][0].reason
    assert reason.startswith(f"file is {size:,} bytes, above the")


def test_pixels_per_image_at_the_bound_and_one_over(tmp_path):
    paths = _study(tmp_path, 1, rows=64, cols=56)
    assert handlers.read_upload(paths, AppLimits(max_pixels=64 * 56))[1][0].status == "ok"
    reason = handlers.read_upload(paths, AppLimits(max_pixels=64 * 56 - 1))[1][0].reason
    assert reason == "image of 64×56 pixels exceeds the 3,583-pixel limit"


def test_total_pixels_of_an_upload_at_the_bound_and_one_over(tmp_path):
    paths = _study(tmp_path, 2, rows=64, cols=56)
    studies, records = handlers.read_upload(paths, AppLimits(max_total_pixels=2 * 64 * 56))
    assert [r.status for r in records] == ["ok", "ok"]
    studies, records = handlers.read_upload(paths, AppLimits(max_total_pixels=2 * 64 * 56 - 1))
    assert records[0].ok and not records[1].ok and len(studies[0].views) == 1
    assert "exceed 7,167 pixels in total (MVCM_MAX_TOTAL_PIXELS)" in records[1].reason


def test_question_length_at_the_bound_and_one_over():
    limits = AppLimits(max_question_chars=20)
    assert ask.check_question("x" * 20, limits) == "x" * 20
    with pytest.raises(ValueError, match=r"^The question has 21 characters; the limit is 20 "):
        ask.check_question("x" * 21, limits)


def test_api_ask_refuses_a_long_question_before_reading_or_asking(tmp_path):
    class NoModel:
        def answer(self, *args, **kwargs):
            raise AssertionError("the model must not be asked")

    with pytest.raises(ValueError, match="limit is 5"):
        api.ask(NoModel(), _study(tmp_path, 1), "Is it?!", limits=AppLimits(max_question_chars=5))


def test_request_rate_token_bucket_at_the_bound_and_one_over():
    now = [100.0]
    limiter = RateLimiter(per_minute=60, burst=3, clock=lambda: now[0])
    for _ in range(3):
        limiter.check("student-a")  # the burst
    with pytest.raises(ValueError, match=r"^Too many requests: wait 1.0 s and try again.$"):
        limiter.check("student-a")
    limiter.check("student-b")  # buckets are per client session
    now[0] += 1.0  # one token back per second at 60 / minute
    limiter.check("student-a")
    with pytest.raises(ValueError):
        limiter.check("student-a")


def test_uploads_are_deleted_when_the_last_request_holding_them_is_done(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    (tmp_path / "gradio").mkdir()
    stray = tmp_path / "gradio" / "tmpabc123"  # Gradio's multipart temp file, never renamed
    stray.write_bytes(b"")
    tracker = UploadTracker(ttl_s=60)
    shared = tmp_path / "sha" / "PA.dcm"  # Gradio: one path per content, shared by identical uploads
    shared.parent.mkdir()
    shared.write_bytes(b"x")
    tracker._add([str(shared)] * 2)  # two students uploaded the same file
    tracker.release([shared])
    assert shared.exists()  # the second student's request still needs it
    tracker.release([shared])
    assert not shared.exists() and not shared.parent.exists() and tracker.held() == 0
    orphan = tmp_path / "orphan.dcm"
    orphan.write_bytes(b"x")
    tracker._add([str(orphan)])  # uploaded, then the request was refused: nobody releases it
    assert tracker.sweep(now=orphan.stat().st_mtime + 5) == 0 and orphan.exists() and stray.exists()
    assert tracker.sweep(now=orphan.stat().st_mtime + 61) == 2 and not orphan.exists() and not stray.exists()


# ---- the launched app: a bounded crowd on loopback ------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from app_fixtures import build_served

    from mvcm_core.inference import Predictor

    root = tmp_path_factory.mktemp("crowd")
    checkpoint, study = build_served(root)
    return Predictor.from_pretrained(checkpoint), study, root


@pytest.fixture()
def crowd_app(served, tmp_path, monkeypatch):
    """A launched app factory whose Gradio upload dir and session dir are watched folders."""
    from app_fixtures import launched

    import demo.session as session_module
    from demo.app import build_demo

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    monkeypatch.setattr(session_module, "SESSION_ROOT", tmp_path / "sessions")

    def start(limits):
        return launched(build_demo(served[0], examples_root=str(tmp_path / "none"), limits=limits))

    return start, [tmp_path / "gradio", tmp_path / "sessions"]


@pytest.mark.slow
def test_eight_users_get_every_answer_and_leave_no_upload_behind(served, crowd_app):
    from benchmarks.load_test import run_load

    start, watched = crowd_app
    with start(AppLimits()) as url:
        figures = run_load(url, [[served[1] / "PA.dcm", served[1] / "LL.dcm"]], users=8, requests=56,
                           timeout_s=600, watched=watched, settle_s=16.0)
    print(f"\nbounded load: {figures}")
    assert figures["errors"] == 0, figures["error_examples"]
    assert figures["answered"] == 56 and figures["lost"] == 0
    assert figures["temp_files_left"] == 0, figures["temp_files_left_examples"]


@pytest.mark.slow
def test_a_full_queue_tells_the_overflow_to_wait_and_loses_nothing(served, crowd_app):
    from benchmarks.load_test import run_load

    start, watched = crowd_app
    with start(AppLimits(queue_size=1)) as url:
        figures = run_load(url, [[served[1] / "PA.dcm", served[1] / "LL.dcm"]], users=8, requests=32,
                           timeout_s=600, watched=watched, settle_s=16.0)
    print(f"\nqueue of 1, 8 users: {figures}")
    assert figures["told_to_wait"] > 0  # the queue did overflow ...
    assert figures["errors"] == 0 and figures["answered"] == 32 and figures["lost"] == 0  # ... and nothing was lost


@pytest.mark.slow
def test_a_client_over_its_request_rate_is_told_to_wait(served, crowd_app):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    start, watched = crowd_app
    with start(AppLimits(rate_burst=2, rate_per_minute=1)) as url:
        client = Client(url, verbose=False, download_files=False, analytics_enabled=False)
        files = [handle_file(str(served[1] / "PA.dcm"))]
        for _ in range(2):
            assert client.predict(files=files, api_name="/load_study")["files"][0]["status"] == "ok"
        with pytest.raises(AppError, match=r"Too many requests: wait \d+\.\d s and try again"):
            client.predict(files=files, api_name="/load_study")
        other = Client(url, verbose=False, download_files=False, analytics_enabled=False)
        assert other.predict(files=files, api_name="/load_study")["summary"].startswith("1 study")
        client.close(), other.close()
    assert not [p for folder in watched if folder.exists() for p in folder.rglob("*.dcm")]  # refused ones too


@pytest.mark.slow
def test_gradio_refuses_an_upload_over_the_file_size_bound(served, crowd_app, tmp_path):
    from app_fixtures import free_port
    from gradio_client import Client, handle_file

    from demo.app import LAUNCH_KWARGS, build_demo

    limits = AppLimits(max_file_mb=0.05)
    demo = build_demo(served[0], examples_root=str(tmp_path / "none"), limits=limits)
    kwargs = {**LAUNCH_KWARGS, "max_file_size": limits.gradio_max_file_size}
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                            quiet=True, **kwargs)
    try:
        client = Client(url, verbose=False, download_files=False, analytics_enabled=False)
        at, over = tmp_path / "at.dcm", tmp_path / "over.dcm"
        _dicom_of_exact_size(at, limits.max_file_bytes)
        _dicom_of_exact_size(over, limits.max_file_bytes + 2)
        assert client.predict(files=[handle_file(str(at))], api_name="/load_study")["files"][0]["status"] == "ok"
        with pytest.raises(Exception, match="(?i)exceeds the maximum file size|maximum allowed size"):
            client.predict(files=[handle_file(str(over))], api_name="/load_study")
        client.close()
    finally:
        demo.close()


def test_an_upload_with_an_examples_bytes_is_never_deleted(tmp_path):
    """Gradio caches a clicked example at the same path as an identical upload: deleting it breaks the example."""
    from demo.session import UploadTracker

    example = tmp_path / "example.dcm"
    example.write_bytes(b"example bytes")
    same, other = tmp_path / "a" / "PA.dcm", tmp_path / "b" / "PA.dcm"
    for path, data in ((same, b"example bytes"), (other, b"other bytes!!")):
        path.parent.mkdir()
        path.write_bytes(data)
    tracker = UploadTracker()
    tracker.protect([example])
    tracker._add([str(same), str(other)])
    tracker.release([same, other])
    assert same.is_file() and not other.exists()
