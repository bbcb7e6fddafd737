"""Bounded load test of the app on loopback: concurrent ``gradio_client`` users, a fixed request count.

Each simulated student opens a session (a new ``gradio_client.Client``), loads one study
(``/load_study``), asks five questions (``/ask``) and retrieves similar reports (``/retrieve``), then
closes; users repeat sessions until ``--requests`` requests have been answered. A request refused
because the queue is full or the client's rate is exceeded was *told to wait*: the user backs off and
sends it again (counted, not an error). Printed: errors, lost requests, waits, p50 / p95 latency, the
server's resident memory before and after, and the temp files left once every session has ended.

Run (starts ``python -m demo`` on a free loopback port with the shipped checkpoint)::

    python -m benchmarks.load_test --users 12 --requests 500

Exit code 1 when a bound is violated: any error or lost request, temp files left, or resident memory
growing by more than ``--max-rss-growth-mb``. Traffic goes to 127.0.0.1 only, bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import proc_status_mb

QUESTIONS = [
    "Is there a pleural effusion?",
    "Is there cardiomegaly?",
    "Is there a pneumothorax?",
    "Is this a normal study?",
    "Which side is the pleural effusion on?",
]
WAIT_MARKERS = ("queue is full", "too many requests")


@dataclass
class Tally:
    """Shared counters of a load run (guarded by ``lock``)."""

    target: int
    issued: int = 0
    done: int = 0
    errors: list[str] = field(default_factory=list)
    waits: int = 0
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ticket(self) -> bool:
        """Claim one of the ``target`` requests; False when all are claimed."""
        with self.lock:
            if self.issued >= self.target:
                return False
            self.issued += 1
            return True


def temp_files(folders: Sequence[Path]) -> set[str]:
    """Every file below ``folders``."""
    return {str(p) for folder in folders if folder.is_dir() for p in folder.rglob("*") if p.is_file()}


def _call(client: Any, tally: Tally, kwargs: dict[str, Any], deadline: float) -> bool:
    """One request, sent again while the server says wait; False if it failed (counted as an error)."""
    delay = 0.2
    while time.monotonic() < deadline:
        start = time.perf_counter()
        try:
            client.predict(**kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure is classified below
            text = str(exc).lower()
            if any(marker in text for marker in WAIT_MARKERS):
                with tally.lock:
                    tally.waits += 1
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            with tally.lock:
                tally.errors.append(f"{kwargs['api_name']}: {type(exc).__name__}: {str(exc)[:200]}")
            return False
        with tally.lock:
            tally.latencies.append(time.perf_counter() - start)
            tally.done += 1
        return True
    with tally.lock:
        tally.errors.append(f"{kwargs['api_name']}: still told to wait at the deadline")
    return False


def user(url: str, studies: Sequence[Sequence[Path]], tally: Tally, number: int, deadline: float) -> None:
    """Sessions of one student until the request budget is spent: load, 5 questions, retrieve."""
    from gradio_client import Client, handle_file

    session = 0
    while time.monotonic() < deadline:
        files = [handle_file(str(p)) for p in studies[(number + session) % len(studies)]]
        session += 1
        steps: list[dict[str, Any]] = [{"files": files, "api_name": "/load_study"}]
        steps += [{"files": files, "question": q, "top_k": 3, "api_name": "/ask"} for q in QUESTIONS]
        steps.append({"files": files, "k": 5, "api_name": "/retrieve"})
        client = Client(url, verbose=False, download_files=False, analytics_enabled=False,
                        httpx_kwargs={"timeout": 600})
        try:
            for kwargs in steps:
                if not tally.ticket():
                    return
                _call(client, tally, kwargs, deadline)
        finally:
            client.close()


def run_load(
    url: str,
    studies: Sequence[Sequence[Path]],
    users: int,
    requests: int,
    timeout_s: float = 1800.0,
    rss: Callable[[], float] | None = None,
    watched: Sequence[Path] = (),
    settle_s: float = 16.0,
) -> dict[str, Any]:
    """Drive ``users`` concurrent students until ``requests`` requests are answered; return the figures."""
    tally = Tally(target=requests)
    before_files = temp_files(watched)
    rss_before = rss() if rss else float("nan")
    deadline = time.monotonic() + timeout_s
    start = time.perf_counter()
    threads = [threading.Thread(target=user, args=(url, studies, tally, n, deadline)) for n in range(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    rss_after = rss() if rss else float("nan")
    time.sleep(settle_s)  # heartbeats close, unload events run, the upload sweeper passes
    left = sorted(temp_files(watched) - before_files)
    latencies = sorted(tally.latencies)
    quantile = (lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]) if latencies else None
    return {
        "users": users,
        "requests": requests,
        "answered": tally.done,
        "errors": len(tally.errors),
        "error_examples": tally.errors[:5],
        "lost": requests - tally.done - len(tally.errors),
        "told_to_wait": tally.waits,
        "p50_ms": round(1000 * quantile(0.50), 1) if quantile else None,
        "p95_ms": round(1000 * quantile(0.95), 1) if quantile else None,
        "mean_ms": round(1000 * statistics.fmean(latencies), 1) if latencies else None,
        "throughput_rps": round(tally.done / elapsed, 2) if elapsed else None,
        "seconds": round(elapsed, 1),
        "rss_before_mb": round(rss_before, 1),
        "rss_after_mb": round(rss_after, 1),
        "rss_growth_mb": round(rss_after - rss_before, 1),
        "temp_files_left": len(left),
        "temp_files_left_examples": [Path(p).name for p in left[:5]],
    }


def sample_studies(root: Path) -> list[list[Path]]:
    """The two DICOMs of every study folder under ``root``."""
    studies = [[f / "PA.dcm", f / "LL.dcm"] for f in sorted(root.iterdir()) if (f / "PA.dcm").is_file()]
    if not studies:
        raise SystemExit(f"no studies (folders with PA.dcm and LL.dcm) under {root}")
    return studies


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(checkpoint: str, work: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """``python -m demo`` on a free loopback port, its temp dirs under ``work``; returns (process, url)."""
    port = _free_port()
    environ = {**os.environ, "GRADIO_TEMP_DIR": str(work / "gradio"), "TMPDIR": str(work / "tmp"),
               "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", **(env or {})}
    (work / "tmp").mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "demo", "--host", "127.0.0.1", "--port", str(port), "--checkpoint", checkpoint]
    process = subprocess.Popen(command, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the app exited with code {process.returncode}: {process.stderr.read()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("the app did not start within 300 s")


def main(argv: Sequence[str] | None = None) -> int:
    """Start the app, run the load, print the figures; 1 if a bound is violated."""
    parser = argparse.ArgumentParser(description="Bounded loopback load test of the MVCM app.")
    parser.add_argument("--users", type=int, default=12)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--checkpoint", default="assets/checkpoints/mvcm-tiny-phantom")
    parser.add_argument("--studies", type=Path, default=Path("assets/studies"))
    parser.add_argument("--max-rss-growth-mb", type=float, default=300.0)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds for the whole run")
    args = parser.parse_args(argv)
    studies = sample_studies(args.studies)
    with tempfile.TemporaryDirectory(prefix="mvcm-load-") as folder:
        work = Path(folder)
        process, url = start_server(args.checkpoint, work)
        try:
            server_rss = lambda: proc_status_mb("VmRSS", process.pid) or float("nan")  # noqa: E731
            warm = run_load(url, studies, 1, 7, rss=server_rss, settle_s=0)  # first session
            figures = run_load(url, studies, args.users, args.requests, args.timeout,
                               rss=server_rss, watched=[work / "gradio", work / "tmp"])
            figures["rss_at_start_mb"] = warm["rss_before_mb"]
        finally:
            process.terminate()
            process.wait(timeout=60)
    figures["max_rss_growth_mb"] = args.max_rss_growth_mb
    violated = [name for name, bad in [
        ("errors", figures["errors"] > 0), ("lost requests", figures["lost"] != 0),
        ("temp files left", figures["temp_files_left"] > 0),
        ("memory growth", figures["rss_growth_mb"] > args.max_rss_growth_mb)] if bad]
    figures["violated"] = violated
    print(json.dumps(figures, indent=1))
    print(f"{figures['answered']}/{args.requests} answered by {args.users} users: p50 {figures['p50_ms']} ms, "
          f"p95 {figures['p95_ms']} ms, RSS {figures['rss_before_mb']} -> {figures['rss_after_mb']} MB, "
          f"{figures['told_to_wait']} told to wait, {figures['errors']} errors, "
          f"{figures['temp_files_left']} temp files left" + (f"; VIOLATED: {violated}" if violated else ""))
    return 1 if violated else 0


if __name__ == "__main__":
    sys.exit(main())
