"""Per-study inference: answer + retrieval top-5 for a two-view study, against the FLOP bound and the eager baseline.

Run: ``python -m benchmarks.bench_predictor [--checkpoint DIR] [--repeats 40] [--quick] [--json]``.
Studies are the shipped samples (``assets/studies``), already ingested to model inputs (DICOM ingest
is ``bench_dicom``); each timed call takes the next (study, question) pair, the same sequence for
every path. Timed, each as median and p95 after warm-up, in one process:

- baseline: ``Predictor(optimize=False)`` — plain eager fp32, ``answer()`` then ``retrieve()``;
- optimised: ``Predictor()`` — ``answer_and_retrieve()`` on the optimised path (engine and precision
  ``auto``: ONNX Runtime in fp32 where it is installed);
- ablations (not with ``--quick``): the PyTorch engine (precision ``auto``), in fp32, with the other memory
  layout (channels-last off for a CNN tower, on for a ViT), without prepacked weights (when bf16 prepacks
  them); the optimised path and the PyTorch engine with one thread.

Every row encodes each question anew (the optimised path's question cache is off), except the row
"questions asked before", where the cycle's six questions come from the cache.

Model FLOPs per study are counted with ``torch.utils.flop_counter`` (matmuls, convolutions,
attention) on the path that is timed (on its plain PyTorch twin when it runs in ONNX Runtime or
with prepacked weights, which the counter cannot see); the FLOP bound is FLOPs ÷ the matmul peak
measured in the same run (bf16 peak when the path runs in bf16, else fp32; the 1-thread rows use one
core's peak, also measured), and the ratio is achieved ÷ bound. ``ratio_to_best_peak`` is the same
ratio against the higher of the two peaks, whatever the path computes in.
Prints figures; never asserts on time.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import REPO, emit, summary, timings_ms

QUESTIONS = ("Is there a pleural effusion?", "Which side is the effusion on?", "Is this study normal?",
             "Is the heart enlarged?", "Where is the opacity located in the lungs?", "Is there a pneumothorax?")


def sample_studies(size: int) -> list[tuple[str, list]]:
    """(study folder, [(uint8 view, label), ...]) of every shipped sample study."""
    from mvcm_core.inference import study_views

    out = []
    for folder in sorted(p for p in (REPO / "assets" / "studies").iterdir() if p.is_dir()):
        views, labels = study_views(folder, size)
        out.append((str(folder), list(zip(views, labels))))
    return out


def model_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (matmul, convolution and attention ops)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def unpacked_twin(predictor: Any) -> Any:
    """``predictor``, or for a prepacked or ONNX Runtime one the same path with plain PyTorch modules.

    ``torch.utils.flop_counter`` sees neither oneDNN's prepacked kernels (``mvcm_core.prepack``) nor ONNX
    Runtime, so their FLOPs are counted on the plain twin, which computes the same products.
    """
    from mvcm_core.inference import Predictor
    from mvcm_core.inference_fast import FastPath

    if predictor.fast is None or not (predictor.fast.prepacked or predictor.fast.ort is not None):
        return predictor
    twin = Predictor(predictor.model, predictor.folder, predictor.index, predictor.ood, predictor.temperature,
                     engine="torch")
    twin.fast = FastPath(predictor.model, predictor.precision, channels_last=predictor.fast.channels_last,
                         prepack=False, engine="torch", question_cache=predictor.fast.question_cache)
    return twin


def time_path(call: Callable[[list, str], object], studies: list, repeats: int) -> dict[str, float]:
    """Median / p95 ms of ``call(study, question)`` cycling through studies and questions."""
    pairs = itertools.cycle([(study, q) for (_, study), q in zip(itertools.cycle(studies), QUESTIONS * len(studies))])
    return summary(timings_ms(lambda: call(*next(pairs)), repeats, warmup=5))


def bound_row(name: str, timing: dict[str, float], flops: int, peaks: dict[str, float], precision: str,
              engine: str) -> dict[str, Any]:
    """One table row with the FLOP bound (ms) at the path's precision, and the ratios achieved ÷ bound."""
    peak, best = peaks.get(precision), max((p for p in peaks.values() if p), default=None)
    bound_ms = None if not peak else flops / (peak * 1e9) * 1e3
    best_ms = None if not best else flops / (best * 1e9) * 1e3
    return {"path": name, "engine": engine, "precision": precision, **timing, "gflop_per_study": round(flops / 1e9, 3),
            "peak_gflops_used": peak, "flop_bound_ms": None if bound_ms is None else round(bound_ms, 2),
            "ratio_to_bound": None if bound_ms is None else round(timing["median_ms"] / bound_ms, 2),
            "ratio_to_best_peak": None if best_ms is None else round(timing["median_ms"] / best_ms, 2)}


def variants(base: Any, fast: Any) -> list[tuple[str, Any]]:
    """The ablation rows: the PyTorch engine and its options, each changed alone."""
    from mvcm_core.inference import Predictor
    from mvcm_core.inference_fast import FastPath
    from mvcm_core.inference_ort import onnxruntime_available

    def predictor(**options: Any) -> Any:
        return Predictor(base.model, base.folder, base.index, base.ood, base.temperature, **options)

    torch_engine = predictor(engine="torch")
    rows = [] if fast.engine == "torch" else [("PyTorch engine", torch_engine)]
    if fast.engine == "torch" and onnxruntime_available():
        rows += [("ONNX Runtime engine (fp32)", predictor(engine="onnxruntime"))]
    rows += [("PyTorch engine, fp32", predictor(engine="torch", precision="fp32"))]
    other_layout = predictor(engine="torch")
    other_layout.fast = FastPath(base.model, torch_engine.precision, channels_last=not torch_engine.fast.channels_last,
                                 engine="torch")
    rows += [(f"PyTorch engine, channels-last {'on' if other_layout.fast.channels_last else 'off'}", other_layout)]
    if torch_engine.fast.prepacked:  # the same path with plain modules: what prepacking the weights buys
        unpacked = predictor(engine="torch")
        unpacked.fast = FastPath(base.model, unpacked.precision, prepack=False, engine="torch")
        rows += [("PyTorch engine, weights not prepacked", unpacked)]
    return rows


def run(checkpoint: str, repeats: int, quick: bool) -> dict[str, Any]:
    """Every path's figures, the machine peak measured in the same process, and the speed-up."""
    from benchmarks.bench_machine import measure_peak
    from mvcm_core.inference import Predictor

    machine = measure_peak(quick=quick)  # --quick: a smoke run, its bound is not meaningful
    base = Predictor.from_pretrained(checkpoint, optimize=False)
    fast = Predictor(base.model, base.folder, base.index, base.ood, base.temperature)
    studies = sample_studies(base.cfg.preprocess.image_size)
    peaks = {"fp32": machine["peak_fp32_gflops"], "bf16": machine["peak_bf16_gflops"]}

    def baseline(study: list, question: str) -> object:
        return base.answer(study, question), base.retrieve(study, 5)

    def optimised(predictor: Any) -> Callable[[list, str], object]:
        return lambda study, question: predictor.answer_and_retrieve(study, question, k=5)

    first = studies[0][1]
    rows = [bound_row("baseline: eager fp32, answer() + retrieve()", time_path(baseline, studies, repeats),
                      model_flops(lambda: baseline(first, QUESTIONS[0])), peaks, "fp32", "torch")]
    paths: list[tuple[str, Any]] = [("optimised: answer_and_retrieve()", fast)]
    paths += [] if quick else variants(base, fast)
    for _, predictor in paths:
        predictor.fast.question_cache = 0  # a new question every call: the text encoder always runs
    if not quick:
        paths.append(("optimised, questions asked before (question cache)",
                      Predictor(base.model, base.folder, base.index, base.ood, base.temperature)))
    for name, predictor in paths:
        timing = time_path(optimised(predictor), studies, repeats)
        counted = optimised(unpacked_twin(predictor))  # the same arithmetic in ops the FLOP counter knows
        if predictor.fast.question_cache:
            counted(first, QUESTIONS[0])  # its timed calls found the question cached: count that work
        flops = model_flops(lambda: counted(first, QUESTIONS[0]))  # noqa: B023
        rows.append(bound_row(name, timing, flops, peaks, predictor.precision, predictor.engine))
    if not quick:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # ONNX Runtime sessions follow it (mvcm_core.inference_ort)
        single = paths[:1] + [(name, predictor) for name, predictor in paths[1:]
                              if name in ("PyTorch engine", "ONNX Runtime engine (fp32)", "PyTorch engine, fp32")
                              or name.endswith("not prepacked")]
        timings = [(f"{name}, 1 thread", predictor, time_path(optimised(predictor), studies, repeats))
                   for name, predictor in single]
        one_thread = measure_peak()  # one core's own peak: more than half the two-core peak here
        torch.set_num_threads(threads)
        machine["one_thread"] = {key: one_thread[key] for key in ("peak_fp32_gflops", "peak_bf16_gflops")}
        one_peaks = {"fp32": one_thread["peak_fp32_gflops"], "bf16": one_thread["peak_bf16_gflops"]}
        for name, predictor, timing in timings:
            rows.append(bound_row(name, timing, rows[1]["gflop_per_study"] * 1e9, one_peaks, predictor.precision,
                                  predictor.engine))
    folder = studies[0][0]
    end_to_end = summary(timings_ms(lambda: fast.answer_and_retrieve(folder, QUESTIONS[0], k=5), max(5, repeats // 4)))
    return {"checkpoint": checkpoint, "threads": torch.get_num_threads(), "machine": machine, "paths": rows,
            "speedup_vs_baseline": round(rows[0]["median_ms"] / rows[1]["median_ms"], 2),
            "optimised_precision": fast.precision, "optimised_engine": fast.engine, "from_dicom_folder": end_to_end,
            "studies": [Path(s).name for s, _ in studies]}


def main(argv: Sequence[str] | None = None) -> int:
    """Print the per-study latency table."""
    from mvcm_core.inference import default_checkpoint

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    repeats = min(args.repeats, 12) if args.quick else args.repeats
    result = run(args.checkpoint or default_checkpoint(), repeats, args.quick)
    lines = [(f"per-study answer + retrieval top-5, {result['threads']} threads, peak fp32 "
              f"{result['machine']['peak_fp32_gflops']} / bf16 {result['machine']['peak_bf16_gflops']} GFLOP/s"),
             (f"{'path':<52} {'engine':>11} {'prec':>5} {'median ms':>9} {'p95 ms':>8} {'GFLOP':>6} {'bound ms':>8} "
              f"{'ratio':>6} {'vs best peak':>12}")]
    for row in result["paths"]:
        lines.append(f"{row['path']:<52} {row['engine']:>11} {row['precision']:>5} {row['median_ms']:>9.1f} "
                     f"{row['p95_ms']:>8.1f} {row['gflop_per_study']:>6.2f} {row['flop_bound_ms'] or '-':>8} "
                     f"{row['ratio_to_bound'] or '-':>6} {row['ratio_to_best_peak'] or '-':>12}")
    if "one_thread" in result["machine"]:
        lines.append(f"one core's own peak (the 1-thread row's bound): fp32 {result['machine']['one_thread']['peak_fp32_gflops']}"
                     f" / bf16 {result['machine']['one_thread']['peak_bf16_gflops']} GFLOP/s")
    lines.append(f"speed-up of the optimised path over the eager fp32 baseline: {result['speedup_vs_baseline']}x; "
                 f"from the DICOM folder (ingest included): {result['from_dicom_folder']['median_ms']:.1f} ms median")
    emit(result, args.json, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
