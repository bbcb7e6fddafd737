"""``mvcm bench``: the command runs, returns the expected keys, and its verdicts can fail (never timed)."""

from __future__ import annotations

import json

import pytest

from mvcm_core.cli import bench_cmd
from mvcm_core.cli.main import main


def test_mvcm_bench_quick_json_runs_and_returns_the_expected_keys(capsys):
    assert main(["bench", "--json", "--quick", "--only", "machine"]) == 0
    out = json.loads(capsys.readouterr().out)
    machine = out["machine"]["bench_machine"]
    assert {"peak_fp32_gflops", "peak_bf16_gflops", "baseline_numpy_fp32_gflops", "native_bf16", "threads",
            "sizes"} <= set(machine)
    assert machine["peak_fp32_gflops"] > 0 and machine["sizes"][0]["n"] == 256
    assert (machine["peak_bf16_gflops"] is None) == (not machine["native_bf16"])


def test_mvcm_bench_refuses_unknown_sections(capsys):
    assert main(["bench", "--only", "machine,gpu"]) == 2
    assert "gpu" in capsys.readouterr().err


def _predictor(median: float, speedup: float, ratio: float) -> dict:
    row = {"path": "optimised: answer_and_retrieve()", "median_ms": median, "p95_ms": median * 1.2,
           "precision": "bf16", "gflop_per_study": 1.0, "flop_bound_ms": median / ratio, "ratio_to_bound": ratio}
    baseline = {**row, "path": "baseline", "median_ms": median * speedup, "ratio_to_bound": ratio * speedup}
    one_thread = {**row, "path": "optimised: answer_and_retrieve(), 1 thread", "ratio_to_bound": ratio + 0.4}
    return {"paths": [baseline, row, one_thread], "speedup_vs_baseline": speedup}


@pytest.mark.parametrize(("median", "speedup", "ratio", "verdicts"), [
    (40.0, 3.0, 2.0, ["pass", "-", "pass", "pass", "pass"]),
    (40.0, 3.0, 2.3, ["pass", "-", "pass", "pass", "FAIL"]),  # the 1-thread row has its own verdict
    (160.0, 1.5, 3.0, ["FAIL", "-", "FAIL", "FAIL", "FAIL"]),
])
def test_the_summary_table_passes_and_fails_on_the_targets(median, speedup, ratio, verdicts):
    table = bench_cmd.markdown({"predictor": {"bench_predictor": _predictor(median, speedup, ratio)}})
    rows = table.splitlines()[2:]
    assert [row.split("|")[-2].strip() for row in rows] == verdicts


def test_retrieval_and_ingest_targets():
    retrieval = {"rows": [
        {"size": 1_000_000, "method": "numpy brute force", "median_ms": 50.0, "index_mb": 488.0, "recall@10": 1.0},
        {"size": 1_000_000, "method": "mvcm faiss (nlist 4096, nprobe 16)", "median_ms": 3.0, "index_mb": 130.0,
         "recall@10": 0.93},
    ]}
    assert bench_cmd.markdown({"retrieval": {"bench_index": retrieval}}).splitlines()[-1].endswith("| FAIL |")
    ingest = {"rows": [{"file": "RG1_UNCR", "size": 128, "mvcm_median_ms": 90.0, "pydicom_pil_median_ms": 80.0,
                        "ratio": 1.12}]}
    assert bench_cmd.markdown({"ingest": {"bench_dicom": ingest}}).splitlines()[-1].endswith("| FAIL |")
    errored = bench_cmd.markdown({"app": {"bench_app": {"error": "exited with code 1"}}})
    assert "error: exited with code 1" in errored


def test_the_flop_bound_ratio_uses_the_measured_peak():
    from benchmarks.bench_predictor import bound_row

    timing = {"median_ms": 20.0, "p95_ms": 25.0, "runs": 3}
    row = bound_row("x", timing, int(2e9), {"fp32": 200.0, "bf16": 800.0}, "fp32", "onnxruntime")
    assert row["flop_bound_ms"] == 10.0 and row["ratio_to_bound"] == 2.0
    assert row["ratio_to_best_peak"] == 8.0 and row["engine"] == "onnxruntime"  # against the bf16 peak
    assert bound_row("x", timing, int(2e9), {"fp32": None, "bf16": None}, "bf16", "torch")["ratio_to_bound"] is None
