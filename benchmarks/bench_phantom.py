"""Phantom rendering throughput: studies (PA + lateral, processed, 12-bit) per second.

Run: ``python -m benchmarks.bench_phantom [--studies 200] [--pool 16] [--sizes 256 512] [--workers 2]``.
Reports, per size: the cold cost of one base anatomy, the warm cost of one study (cached anatomy,
random findings), and the end-to-end rate of a dataset of ``--studies`` studies drawn over ``--pool``
anatomies rendered by ``--workers`` processes (in memory; add ~5 ms/study for DICOM + PNG writing).
Prints figures; never asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np


def _render_chunk(args: tuple) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from mvcm_core.data.phantom.render import render_study
    from mvcm_core.data.phantom.sampler import sample_findings

    seeds, size, pool = args
    for seed in seeds:
        render_study(sample_findings(np.random.default_rng(seed)), seed, size, pool=pool)
    return len(seeds)


def bench_size(size: int, studies: int, pool: int, workers: int) -> dict[str, float]:
    """Measure one detector size."""
    from mvcm_core.data.phantom.render import clear_cache, render_study
    from mvcm_core.data.phantom.sampler import sample_findings

    clear_cache()
    start = time.perf_counter()
    render_study([], 0, size, anatomy_id=0)
    cold = time.perf_counter() - start
    warm = []
    for seed in range(1, 21):
        findings = sample_findings(np.random.default_rng(seed))
        start = time.perf_counter()
        render_study(findings, seed, size, anatomy_id=0)
        warm.append(time.perf_counter() - start)
    seeds = sorted(range(1000, 1000 + studies), key=lambda s: s % pool)
    groups: dict[int, list[int]] = {}
    for seed in seeds:
        groups.setdefault(seed % pool, []).append(seed)
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as executor:
        done = sum(executor.map(_render_chunk, [(g, size, pool) for g in groups.values()]))
    elapsed = time.perf_counter() - start
    return {"size": size, "cold_anatomy_s": round(cold, 3), "warm_study_ms": round(1e3 * statistics.median(warm), 1),
            "warm_studies_per_s_per_core": round(1.0 / statistics.median(warm), 1),
            "dataset_studies": done, "pool": pool, "workers": workers, "dataset_s": round(elapsed, 1),
            "dataset_studies_per_s": round(done / elapsed, 1)}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one line (or JSON) per size."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--pool", type=int, default=16, help="distinct base anatomies in the dataset run")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    for size in args.sizes:
        result = bench_size(size, args.studies, args.pool, args.workers)
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{size:>4} px: cold anatomy {result['cold_anatomy_s']:.2f} s, warm study {result['warm_study_ms']:.1f} ms "
                  f"({result['warm_studies_per_s_per_core']:.1f}/s/core); dataset {result['dataset_studies']} studies "
                  f"over {result['pool']} anatomies on {result['workers']} workers: {result['dataset_s']:.1f} s = "
                  f"{result['dataset_studies_per_s']:.1f} studies/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
