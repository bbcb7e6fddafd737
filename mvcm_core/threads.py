"""Keep NumPy's BLAS on the calling thread while a request runs, so PyTorch's threads have the cores.

PyTorch runs its operators on its own OpenMP threads. NumPy's BLAS (OpenBLAS in the NumPy wheels)
has a second pool, and its idle threads busy-wait for a while after every call. On a 2-core machine
those waiting threads take the cores from PyTorch's. The retrieval index, the OOD scorer and the
report scoring each call NumPy inside a request. With both pools at 2 threads, the optimised path took
90 ms per study; with NumPy's BLAS on one thread it took 18 ms (``PERFORMANCE.md``). Those NumPy
products are small (a query against a few thousand reports), so one thread costs them nothing that
can be measured.

:func:`one_blas_thread` limits the BLAS libraries that ``threadpoolctl`` finds to one thread, and puts
back their own limit when the last concurrent request has left. OpenBLAS 0.3.31 ignores a limit set
from another thread once the main thread has set one itself; the app's requests then keep NumPy's
own threads, which is slower but not wrong.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_state_lock = threading.Lock()
_state: dict[str, object] = {"libraries": None, "saved": [], "depth": 0}


def _blas_libraries() -> list:
    """threadpoolctl's controllers of the BLAS libraries loaded now ([] without threadpoolctl)."""
    if _state["libraries"] is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # an optional speed-up: without it, NumPy keeps its own threads
            return []
        _state["libraries"] = ThreadpoolController().select(user_api="blas").lib_controllers
    return _state["libraries"]


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """A context in which NumPy's BLAS uses one thread (re-entrant and safe across threads).

    Each library's limit is read when the first request enters, not cached, so a limit set meanwhile by
    someone else is the one put back.
    """
    with _state_lock:
        if _state["depth"] == 0:
            libraries = _blas_libraries()
            _state["saved"] = [library.get_num_threads() for library in libraries]
            for library in libraries:
                library.set_num_threads(1)
        _state["depth"] += 1
    try:
        yield
    finally:
        with _state_lock:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                for library, threads in zip(_blas_libraries(), _state["saved"]):
                    library.set_num_threads(threads)
