"""The machine's own peak: fp32 and bf16 matmul GFLOP/s on the available cores (PyTorch / oneDNN).

Run: ``python -m benchmarks.bench_machine [--quick] [--json]``. Square matmuls of a few sizes, each
the median over repeated runs after warm-up; the peak is the best size's median. Baseline in the
same run: NumPy's fp32 matmul (its own BLAS). bf16 is measured only where oneDNN supports it and
says whether the CPU has it natively. Prints figures; never asserts on time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from benchmarks.common import emit


def gflops(fn: Callable[[], object], flops: float, repeats: int) -> float:
    """Median GFLOP/s of ``fn`` (``flops`` per call) over ``repeats`` timed calls after two warm-ups."""
    fn()
    fn()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        rates.append(flops / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


def bf16_native() -> bool:
    """True when oneDNN runs bf16 here on native instructions (the bf16 columns are measured only then)."""
    from mvcm_core.inference_fast import native_bf16_supported

    return torch.ops.mkldnn._is_mkldnn_bf16_supported() and native_bf16_supported()


def matmul_rates(sizes: Sequence[int], repeats: int) -> list[dict[str, Any]]:
    """GFLOP/s of torch fp32, torch bf16 and NumPy fp32 for square ``n x n`` matmuls."""
    bf16 = bf16_native()
    rows = []
    for n in sizes:
        flops = 2.0 * n**3
        a32, b32 = torch.randn(n, n), torch.randn(n, n)
        out32 = torch.empty(n, n)
        row = {"n": n, "torch_fp32": round(gflops(lambda: torch.mm(a32, b32, out=out32), flops, repeats), 1)}
        if bf16:
            a16, b16 = a32.bfloat16(), b32.bfloat16()
            out16 = torch.empty(n, n, dtype=torch.bfloat16)
            row["torch_bf16"] = round(gflops(lambda: torch.mm(a16, b16, out=out16), flops, repeats), 1)
        an, bn = a32.numpy(), b32.numpy()
        outn = np.empty((n, n), dtype=np.float32)
        row["numpy_fp32"] = round(gflops(lambda: np.matmul(an, bn, out=outn), flops, repeats), 1)
        rows.append(row)
    return rows


# (rows, in, out) of the served model's products: fusion on 130 image tokens (attention projections, MLP),
# the question's 12 tokens in the text encoder, and layer4's 3 × 3 convolution of 2 views as a product
MODEL_SHAPES = ((130, 256, 256), (130, 256, 512), (12, 384, 384), (12, 384, 1536), (128, 2304, 256))


def shape_rates(shapes: Sequence[tuple[int, int, int]] = MODEL_SHAPES, repeats: int = 200) -> list[dict[str, Any]]:
    """GFLOP/s of ``linear`` (plain, no prepacking) at the model's own sizes, fp32 and bf16.

    What a single product of that size reaches here: the gap between these and the square-matmul peak
    is what the FLOP bound cannot see.
    """
    bf16 = bf16_native()
    rows = []
    for m, k, n in shapes:
        x, w = torch.randn(m, k), torch.randn(n, k)
        row = {"shape": f"{m}x{k}x{n}",
               "torch_fp32": round(gflops(lambda: torch.nn.functional.linear(x, w), 2.0 * m * k * n, repeats), 1)}
        if bf16:
            x16, w16 = x.bfloat16(), w.bfloat16()
            row["torch_bf16"] = round(gflops(lambda: torch.nn.functional.linear(x16, w16), 2.0 * m * k * n, repeats), 1)
        rows.append(row)
    return rows


def measure_peak(quick: bool = False) -> dict[str, Any]:
    """Peak fp32 / bf16 GFLOP/s on this machine's cores (the best size's median) and the NumPy baseline.

    ``quick`` (small sizes, a smoke run) underestimates the peak: never use it for a FLOP bound.
    """
    from mvcm_core.inference_fast import native_bf16_supported

    sizes, repeats = ([256, 512], 3) if quick else ([512, 1024, 2048, 3072], 9)
    rows = matmul_rates(sizes, repeats)
    best = {key: max((row[key] for row in rows if key in row), default=None)
            for key in ("torch_fp32", "torch_bf16", "numpy_fp32")}
    return {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": native_bf16_supported(),
            "peak_fp32_gflops": best["torch_fp32"], "peak_bf16_gflops": best["torch_bf16"],
            "baseline_numpy_fp32_gflops": best["numpy_fp32"], "sizes": rows}


def main(argv: Sequence[str] | None = None) -> int:
    """Print the matmul peak table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = measure_peak(args.quick)
    result["model_shapes"] = shape_rates(repeats=20 if args.quick else 200)
    lines = [f"matmul GFLOP/s, {result['threads']} threads, {result['cpu_capability']}, "
             f"native bf16: {result['native_bf16']}",
             f"{'n':>6} {'torch fp32':>11} {'torch bf16':>11} {'numpy fp32':>11}"]
    for row in result["sizes"]:
        lines.append(f"{row['n']:>6} {row['torch_fp32']:>11} {row.get('torch_bf16', '-'):>11} {row['numpy_fp32']:>11}")
    lines += [(f"peak: fp32 {result['peak_fp32_gflops']}, bf16 {result['peak_bf16_gflops']}, "
               f"baseline NumPy fp32 {result['baseline_numpy_fp32_gflops']} GFLOP/s"),
              f"one product at the model's sizes (GFLOP/s): {'rows x in x out':>16} {'fp32':>7} {'bf16':>7}"]
    lines += [f"{'':>43}{row['shape']:>16} {row['torch_fp32']:>7} {row.get('torch_bf16', '-'):>7}"
              for row in result["model_shapes"]]
    emit(result, args.json, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
