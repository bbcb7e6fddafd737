"""App cold start to ready and to the first answer, and the app's peak resident memory under one session.

Run: ``python -m benchmarks.bench_app [--runs 3] [--quick] [--json]``. Each run starts ``python -m demo``
in a fresh process on a free loopback port, polls ``/`` until it answers (ready), then a
``gradio_client`` session asks about a shipped sample study through the named endpoints
(``/ask`` first: cold start to first answer; then ``/load_study``, more ``/ask`` and ``/retrieve``
calls), and reads the app process's peak resident set (``VmHWM``). Baseline in the same run: the
import floor, a fresh ``python -c "import torch, transformers, timm, gradio"``, which no app that
uses these libraries can beat. Medians over runs. Only 127.0.0.1 is contacted; the app is stopped
by its process id. Prints figures; never asserts on time.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, emit, proc_status_mb

QUESTIONS = ("Is there a pleural effusion?", "Is the heart enlarged?", "Which side is the effusion on?")
READY_TIMEOUT_S = 180.0


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen, timeout: float) -> None:
    """Poll ``url`` until it answers 200; a RuntimeError if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback only
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the app was not ready within {timeout:.0f} s")


def one_run(study: Path, session_calls: int) -> dict[str, Any]:
    """Start the app, time ready and first answer, run one session, read the peak RSS, stop it."""
    from gradio_client import Client, handle_file

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "demo", "--port", str(port)], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(url, process, READY_TIMEOUT_S)
        ready = time.perf_counter() - start
        client = Client(url, verbose=False, download_files=False, analytics_enabled=False)
        files = [handle_file(str(p)) for p in sorted(study.iterdir())]
        answer = client.predict(files=files, question=QUESTIONS[0], top_k=5, api_name="/ask")
        first_answer = time.perf_counter() - start
        calls = []
        for i in range(session_calls):
            began = time.perf_counter()
            client.predict(files=files, api_name="/load_study")
            client.predict(files=files, question=QUESTIONS[i % len(QUESTIONS)], top_k=5, api_name="/ask")
            client.predict(files=files, k=5, api_name="/retrieve")
            calls.append(time.perf_counter() - began)
        peak = proc_status_mb("VmHWM", process.pid)
        client.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    return {"ready_s": ready, "first_answer_s": first_answer, "peak_rss_mb": peak,
            "session_round_trip_ms": 1e3 * statistics.median(calls) if calls else None,
            "answered": isinstance(answer, dict) and "answer" in answer}


def import_floor() -> float:
    """Seconds for a fresh interpreter to import the app's heavy libraries (the baseline)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, transformers, timm, gradio"], cwd=REPO, check=True,
                   env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    return time.perf_counter() - start


def run(runs: int, session_calls: int) -> dict[str, Any]:
    """Median cold-start figures over ``runs`` fresh app processes, and the import floor."""
    study = sorted(p for p in (REPO / "assets" / "studies").iterdir() if p.is_dir())[0]
    import_floor()  # warm the file cache, as a second start of the app would
    results = [one_run(study, session_calls) for _ in range(runs)]
    floors = [import_floor() for _ in range(runs)]
    pick = {key: round(statistics.median(r[key] for r in results), 2)
            for key in ("ready_s", "first_answer_s", "session_round_trip_ms")}
    peaks = [r["peak_rss_mb"] for r in results if r["peak_rss_mb"] is not None]
    return {"runs": runs, **pick, "peak_rss_mb": round(max(peaks)) if peaks else None,
            "answered": all(r["answered"] for r in results),
            "baseline_import_floor_s": round(statistics.median(floors), 2), "study": study.name,
            "session": f"{session_calls} x (load_study + ask + retrieve) after the first ask"}


def main(argv: Sequence[str] | None = None) -> int:
    """Print the cold-start figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--session-calls", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one run, two session calls")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(1, 2) if args.quick else run(args.runs, args.session_calls)
    lines = [f"app cold start, median of {result['runs']} fresh processes (python -m demo)",
             f"  ready (HTTP 200): {result['ready_s']} s; first answer: {result['first_answer_s']} s "
             f"(baseline import floor: {result['baseline_import_floor_s']} s)",
             f"  peak resident memory under one session: {result['peak_rss_mb']} MB; "
             f"session round trip (load + ask + retrieve): {result['session_round_trip_ms']} ms"]
    emit(result, args.json, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
