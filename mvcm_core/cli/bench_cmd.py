"""``mvcm bench [--json] [--quick] [--only machine,predictor,ingest,retrieval,train,app]``.

Runs the benchmark scripts of a source checkout (``benchmarks/``), each section in a fresh
``python -m benchmarks.<script> --json`` process, and prints one table of every figure beside its
baseline and target (Markdown, as pasted into ``PERFORMANCE.md``) or, with ``--json``, everything.

Why subprocesses and not imports: ``mvcm_core`` never imports ``benchmarks`` / ``training`` / ``demo``
(the training benchmark needs ``training``, the app benchmark starts ``demo``), the benchmarks are
not part of the installed package, and a fresh process per section keeps memory figures, thread
settings and warm caches from leaking from one section into the next.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

SECTIONS: dict[str, list[str]] = {
    "machine": ["bench_machine"],
    "predictor": ["bench_predictor", "bench_accuracy"],
    "ingest": ["bench_dicom"],
    "retrieval": ["bench_index"],
    "train": ["bench_pretrain"],
    "app": ["bench_app"],
}
Row = tuple[str, str, str, str, str]  # figure, value, baseline, target, verdict


def repo_root() -> Path:
    """The source checkout holding ``benchmarks/`` (a ValueError when mvcm is installed without it)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "__init__.py").is_file():
        raise ValueError(f"mvcm bench needs a source checkout with benchmarks/ (looked in {root})")
    return root


def run_script(root: Path, script: str, quick: bool) -> dict[str, Any]:
    """One benchmark script's JSON result (or ``{"error": ...}``); its progress goes to stderr."""
    command = [sys.executable, "-m", f"benchmarks.{script}", "--json"] + (["--quick"] if quick else [])
    done = subprocess.run(command, cwd=root, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        return {"error": f"{' '.join(command[1:])} exited with code {done.returncode}"}
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        return {"error": f"{script} printed no JSON"}


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("pass" if ok else "FAIL")


def _machine(r: dict[str, Any]) -> list[Row]:
    return [("matmul peak fp32 / bf16 (GFLOP/s)", f"{r['peak_fp32_gflops']} / {r['peak_bf16_gflops']}",
             f"NumPy fp32 {r['baseline_numpy_fp32_gflops']}", "-", "-")]


def _predictor(r: dict[str, Any]) -> list[Row]:
    base, fast = r["paths"][0], r["paths"][1]
    return [("per-study answer + top-5 retrieval, median / p95 (ms)",
             f"{fast['median_ms']:.1f} / {fast['p95_ms']:.1f} ({fast.get('engine', 'torch')}, {fast['precision']})",
             f"{base['median_ms']:.1f} / {base['p95_ms']:.1f}", "≤ 150", _verdict(fast["median_ms"] <= 150)),
            ("model GFLOP per study", f"{fast['gflop_per_study']}", f"{base['gflop_per_study']}", "-", "-"),
            ("achieved ÷ FLOP bound", f"{fast['ratio_to_bound']} (bound {fast['flop_bound_ms']} ms)",
             f"{base['ratio_to_bound']}", "≤ 2.5", _verdict(fast["ratio_to_bound"] is not None
                                                             and fast["ratio_to_bound"] <= 2.5)),
            ("speed-up over eager fp32", f"{r['speedup_vs_baseline']}x", "1x", "≥ 2x",
             _verdict(r["speedup_vs_baseline"] >= 2))] + [
            ("1 thread (the app's setting): median (ms); achieved ÷ FLOP bound at one core's peak",
             f"{row['median_ms']:.1f}; {row['ratio_to_bound']} (bound {row['flop_bound_ms']} ms)", "-", "≤ 2.5",
             _verdict(row["ratio_to_bound"] is not None and row["ratio_to_bound"] <= 2.5))
            for row in r["paths"] if row["path"].startswith("optimised") and row["path"].endswith(", 1 thread")]


def _accuracy(r: dict[str, Any]) -> list[Row]:
    return [("VQA test accuracy (%)", f"{r['optimised_accuracy']} ({r['questions']} questions)",
             f"{r['baseline_accuracy']}", "within 0.5 points",
             _verdict(abs(r["accuracy_difference_points"]) <= 0.5))]


def _ingest(r: dict[str, Any]) -> list[Row]:
    return [(f"ingest {row['file']} → {row['size']} px, median (ms)", f"{row['mvcm_median_ms']:.1f}",
             f"{row['pydicom_pil_median_ms']:.1f}", "≤ 150 and ≤ baseline",
             _verdict(row["mvcm_median_ms"] <= 150 and row["ratio"] <= 1.0)) for row in r["rows"]]


def _retrieval(r: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for row in r["rows"]:
        if row["method"].startswith("numpy"):
            continue
        base = next(b for b in r["rows"] if b["size"] == row["size"] and b["method"].startswith("numpy"))
        approximate = "faiss" in row["method"]
        target, ok = "-", None
        if row["size"] == 100_000 and not approximate:
            target, ok = "≤ 20", row["median_ms"] <= 20
        if row["size"] == 1_000_000 and approximate:
            target, ok = "≤ 20, recall@10 ≥ 0.95", row["median_ms"] <= 20 and row["recall@10"] >= 0.95
        out.append((f"retrieval {row['size']:,} {row['method']} (ms, MB, recall@10)",
                    f"{row['median_ms']:.2f}, {row['index_mb']} MB, {row['recall@10']}",
                    f"{base['median_ms']:.2f}, {base['index_mb']} MB", target, _verdict(ok)))
    return out


def _train(r: dict[str, Any]) -> list[Row]:
    fast, base = r["throughput"][0], r["throughput"][1]
    split = ", ".join(f"{p} {100 * fast[p + '_share']:.0f}%" for p in ("data", "forward", "backward", "optimizer"))
    return [(f"training studies/s (batch {r['batch']}; {split})", f"{fast['studies_per_second']}",
             f"{base['studies_per_second']}", "-", "-")]


def _app(r: dict[str, Any]) -> list[Row]:
    return [("app cold start to ready / first answer (s)", f"{r['ready_s']} / {r['first_answer_s']}",
             f"import floor {r['baseline_import_floor_s']}", "ready ≤ 15", _verdict(r["ready_s"] <= 15)),
            ("app peak resident memory, one session (MB)", f"{r['peak_rss_mb']}", "-", "-", "-")]


SUMMARIES: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "bench_machine": _machine, "bench_predictor": _predictor, "bench_accuracy": _accuracy, "bench_dicom": _ingest,
    "bench_index": _retrieval, "bench_pretrain": _train, "bench_app": _app}


def markdown(results: dict[str, dict[str, Any]]) -> str:
    """The summary table (Markdown) of every section that ran."""
    lines = ["| figure | value | baseline | target | verdict |", "| --- | --- | --- | --- | --- |"]
    for section in results.values():
        for script, result in section.items():
            if "error" in result:
                lines.append(f"| {script} | error: {result['error']} | - | - | - |")
                continue
            lines += [f"| {' | '.join(row)} |" for row in SUMMARIES[script](result)]
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``mvcm bench``."""
    parser = subparsers.add_parser("bench", help="measure latency, throughput and memory against baselines",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="every figure as one JSON document")
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (a smoke run)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {','.join(SECTIONS)}")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the chosen sections and print the table (or JSON); exit 1 when a section failed."""
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        print(f"mvcm bench: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    try:
        root = repo_root()
    except ValueError as exc:
        print(f"mvcm bench: {exc}", file=sys.stderr)
        return 2
    results = {section: {script: run_script(root, script, args.quick) for script in SECTIONS[section]}
               for section in wanted}
    print(json.dumps(results, indent=2) if args.json else markdown(results))
    return 1 if any("error" in r for section in results.values() for r in section.values()) else 0
