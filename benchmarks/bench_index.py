"""Report index benchmark: single-query latency, memory and recall@10 of the retrieval backends.

Run: ``python -m benchmarks.bench_index [--sizes 10000 100000 1000000] [--dim 128] [--queries 200]
[--threads 1] [--quick] [--json]``. For each size, synthetic clustered unit vectors; compared are a NumPy
brute-force baseline (``query @ matrix.T`` + full ``argsort``), ``ReportIndex`` exact, and
``ReportIndex`` faiss (when ``faiss-cpu`` is installed) with its recall@10 against exact. Latency is
per single query after one warm-up query (median and p95, ms). ``index MB`` counts the search
structures (float32 matrix, faiss codes + ids + centroids); ``RSS MB`` is the process resident-set
growth while building (Linux only; includes records and build temporaries). Prints figures; never
asserts on time.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import numpy as np

from benchmarks.common import rss_mb
from mvcm_core.index import ReportIndex

K = 10
Search = Callable[[np.ndarray], np.ndarray]  # one query [D] -> ids [1, K]


def clustered_unit_vectors(n: int, dim: int, seed: int, clusters: int = 1000) -> np.ndarray:
    """Unit vectors [n, dim] around ``clusters`` fixed random centres (cosine ≈ 0.7 to their centre)."""
    centres = np.random.default_rng(12345).standard_normal((clusters, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # bounded temporaries at 10^6 rows
        stop = min(start + 100_000, n)
        rows = centres[rng.integers(0, clusters, stop - start)]
        rows += rng.standard_normal(rows.shape, dtype=np.float32)
        out[start:stop] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def timed_ids(search: Search, queries: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Median and p95 ms of ``search`` per single query [D] after one warm-up call, and the ids [q, K]."""
    search(queries[0])
    times, ids = [], []
    for query in queries:
        start = time.perf_counter()
        ids.append(search(query))
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times)), float(np.percentile(times, 95)), np.concatenate(ids)  # [q, K]


def brute_force(matrix: np.ndarray) -> Search:
    """The baseline: every score, then a full argsort; returns ids [1, K]."""
    return lambda query: np.argsort(-(query[None, :] @ matrix.T), axis=1)[:, :K]  # [1, N] -> [1, K]


def recall_at_k(truth: np.ndarray, found: np.ndarray) -> float:
    """Mean share of each row of ``truth`` [q, K] found in the same row of ``found``."""
    hits = [len(set(t.tolist()) & set(f.tolist())) for t, f in zip(truth, found)]
    return float(np.mean(hits)) / truth.shape[1]


def build(matrix: np.ndarray, backend: str) -> tuple[ReportIndex, float, float | None]:
    """A ``ReportIndex`` over ``matrix`` (faiss trained and tuned here), its build seconds and RSS growth."""
    records = [{"text": "", "report_uid": str(i), "findings": [], "attribution": "synthetic"}
               for i in range(len(matrix))]
    before, start = rss_mb(), time.perf_counter()
    index = ReportIndex(matrix.shape[1], backend=backend)
    index.add(matrix, records)
    if backend == "faiss":
        index.tune()
    after = rss_mb()
    return index, time.perf_counter() - start, None if before is None else after - before


def bench_size(n: int, dim: int, queries: np.ndarray, with_faiss: bool) -> list[dict]:
    """Rows of the table for one index size; recall@10 is against the brute-force top 10."""
    matrix = clustered_unit_vectors(n, dim, seed=n)
    base_median, base_p95, truth = timed_ids(brute_force(matrix), queries)
    rows = [{"size": n, "method": "numpy brute force", "median_ms": round(base_median, 3),
             "p95_ms": round(base_p95, 3), "index_mb": round(matrix.nbytes / 2**20, 1), "rss_mb": None,
             "build_s": 0.0, "recall@10": 1.0}]
    for backend in ["exact", "faiss"] if with_faiss else ["exact"]:
        index, seconds, grown = build(matrix, backend)
        median, p95, found = timed_ids(lambda query: index.search(query, K)[1], queries)  # noqa: B023
        stats = index.stats()
        index_bytes = stats["matrix_bytes"] + stats["faiss_bytes"]
        tuning = f" (nlist {stats['nlist']}, nprobe {stats['nprobe']})" if "nlist" in stats else ""
        rows.append({"size": n, "method": f"mvcm {backend}{tuning}", "median_ms": round(median, 3),
                     "p95_ms": round(p95, 3), "index_mb": round(index_bytes / 2**20, 1),
                     "rss_mb": None if grown is None else round(grown), "build_s": round(seconds, 1),
                     "recall@10": round(recall_at_k(truth, found), 4)})
        del index
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Print a table (or JSON) of latency, memory and recall per index size and backend."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="BLAS / OpenMP threads (needs threadpoolctl)")
    parser.add_argument("--quick", action="store_true", help="10^4 and 10^5 only, 50 queries")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.queries = [size for size in args.sizes if size <= 100_000], min(args.queries, 50)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
        with_faiss = True
    except ImportError:
        with_faiss = False
    try:
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(args.threads)
    except ImportError:
        limits = nullcontext()
    queries = clustered_unit_vectors(args.queries, args.dim, seed=7)  # fresh draws from the same clusters
    with limits:
        rows = [row for n in args.sizes for row in bench_size(n, args.dim, queries, with_faiss)]
    if args.json:
        print(json.dumps({"threads": args.threads, "queries": args.queries, "dim": args.dim, "rows": rows}, indent=2))
        return 0
    print(f"top-{K} of {args.queries} single queries, dim {args.dim}, {args.threads} thread(s)"
          + ("" if with_faiss else "; faiss-cpu not installed"))
    print(f"{'size':>9} {'method':<42} {'median ms':>9} {'p95 ms':>8} {'index MB':>9} {'RSS MB':>7} "
          f"{'build s':>8} {'recall@10':>9}")
    for row in rows:
        rss = "-" if row["rss_mb"] is None else str(row["rss_mb"])
        print(f"{row['size']:>9} {row['method']:<42} {row['median_ms']:>9.2f} {row['p95_ms']:>8.2f} "
              f"{row['index_mb']:>9.1f} {rss:>7} {row['build_s']:>8.1f} {row['recall@10']:>9.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
