"""NumPy's BLAS stays on one thread inside a request and gets its own limit back after (mvcm_core.threads)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from mvcm_core import threads
from mvcm_core.threads import one_blas_thread


class FakeLibrary:
    """A BLAS controller that records its limit (OpenBLAS ignores limits set off the main thread once the
    main thread has set one, so the concurrency logic is tested on this stand-in)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def get_num_threads(self) -> int:
        return self.threads

    def set_num_threads(self, threads: int) -> None:
        self.threads = threads


def test_one_blas_thread_limits_the_real_blas_and_puts_its_limit_back():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    np.ones((4, 4)) @ np.ones((4, 4))  # BLAS is loaded
    libraries = threadpoolctl.ThreadpoolController().select(user_api="blas").lib_controllers
    if not libraries:
        pytest.skip("no BLAS library that threadpoolctl can control")
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        with one_blas_thread():
            assert [library.get_num_threads() for library in libraries] == [1] * len(libraries)
            with one_blas_thread():  # re-entrant
                assert [library.get_num_threads() for library in libraries] == [1] * len(libraries)
            assert [library.get_num_threads() for library in libraries] == [1] * len(libraries)
        assert [library.get_num_threads() for library in libraries] == [2] * len(libraries)


def test_concurrent_requests_keep_the_limit_until_the_last_leaves(monkeypatch):
    library = FakeLibrary(4)
    monkeypatch.setattr(threads, "_blas_libraries", lambda: [library])
    entered, release = threading.Barrier(2), threading.Event()

    def request() -> None:
        with one_blas_thread():
            entered.wait()
            release.wait()

    worker = threading.Thread(target=request)
    worker.start()
    with one_blas_thread():
        entered.wait()
        assert library.threads == 1
    assert library.threads == 1  # this request left; the other one is still inside
    release.set()
    worker.join()
    assert library.threads == 4  # the limit read when the first request entered
