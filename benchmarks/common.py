"""Helpers shared by the benchmarks: timing (median / p95 after warm-up), memory, JSON output.

Benchmarks print figures and never assert on time.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def timings_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> list[float]:
    """Wall times of ``repeats`` calls of ``fn`` in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def summary(times: list[float]) -> dict[str, float]:
    """Median and p95 (ms) of a list of timings."""
    return {"median_ms": round(statistics.median(times), 3), "p95_ms": round(float(np.percentile(times, 95)), 3),
            "runs": len(times)}


def proc_status_mb(field: str = "VmRSS", pid: int | str = "self") -> float | None:
    """A memory field of ``/proc/<pid>/status`` in MB (``VmRSS`` resident, ``VmHWM`` peak), None off Linux."""
    status = Path(f"/proc/{pid}/status")
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return None


def rss_mb() -> float | None:
    """Current resident set size of this process in MB, or None off Linux."""
    return proc_status_mb("VmRSS")


def emit(result: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    """Print the result as one JSON document, or as the human-readable ``lines``."""
    print(json.dumps(result, indent=2) if as_json else "\n".join(lines))
