"""Per-study inference: answer + retrieval top-5 for a two-view study, against the FLOP bound and the eager baseline.

Run: ``python -m benchmarks.bench_predictor [--checkpoint DIR] [--repeats 40] [--quick] [--json]``.
Studies are the shipped samples (``assets/studies``), already ingested to model inputs (DICOM ingest
is ``bench_dicom``); each timed call takes the next (study, question) pair, the same sequence for
every path. Timed, each as median and p95 after warm-up, in one process:

- baseline: ``Predictor(optimize=False)`` — plain eager fp32, ``answer()`` then ``retrieve()``;
- optimised: ``Predictor()`` — ``answer_and_retrieve()`` on the optimised path (precision ``auto``);
- ablations (not with ``--quick``): the optimised path in fp32, with the other memory layout (channels-last
  off for a CNN tower, on for a ViT), without prepacked weights (when bf16 prepacks them), with one thread.

Model FLOPs per study are counted with ``torch.utils.flop_counter`` (matmuls, convolutions,
attention) on the path that is timed (on its plain twin when its weights are prepacked, which the
counter cannot see); the FLOP bound is FLOPs ÷ the matmul peak measured in the
same run (bf16 peak when the path runs in bf16, else fp32; the 1-thread row uses one core's peak,
also measured), and the ratio is achieved ÷ bound.
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
    """``predictor``, or for a prepacked one the same path with plain modules.

    ``torch.utils.flop_counter`` does not see oneDNN's prepacked kernels (``mvcm_core.prepack``), so
    their FLOPs are counted on the plain twin, which computes the same products.
    """
    from mvcm_core.inference import Predictor
    from mvcm_core.inference_fast import FastPath

    if predictor.fast is None or not predictor.fast.prepacked:
        return predictor
    twin = Predictor(predictor.model, predictor.folder, predictor.index, predictor.ood, predictor.temperature)
    twin.fast = FastPath(predictor.model, predictor.precision, channels_last=predictor.fast.channels_last, prepack=False)
    return twin


def time_path(call: Callable[[list, str], object], studies: list, repeats: int) -> dict[str, float]:
    """Median / p95 ms of ``call(study, question)`` cycling through studies and questions."""
    pairs = itertools.cycle([(study, q) for (_, study), q in zip(itertools.cycle(studies), QUESTIONS * len(studies))])
    return summary(timings_ms(lambda: call(*next(pairs)), repeats, warmup=5))


def bound_row(name: str, timing: dict[str, float], flops: int, peak: float | None, precision: str
              ) -> dict[str, Any]:
    """One table row with the FLOP bound (ms) and the ratio achieved ÷ bound."""
    bound_ms = None if not peak else flops / (peak * 1e9) * 1e3
    return {"path": name, "precision": precision, **timing, "gflop_per_study": round(flops / 1e9, 3),
            "peak_gflops_used": peak, "flop_bound_ms": None if bound_ms is None else round(bound_ms, 2),
            "ratio_to_bound": None if bound_ms is None else round(timing["median_ms"] / bound_ms, 2)}


def run(checkpoint: str, repeats: int, quick: bool) -> dict[str, Any]:
    """Every path's figures, the machine peak measured in the same process, and the speed-up."""
    from benchmarks.bench_machine import measure_peak
    from mvcm_core.inference import Predictor
    from mvcm_core.inference_fast import FastPath

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
                      model_flops(lambda: baseline(first, QUESTIONS[0])), peaks["fp32"], "fp32")]
    variants: list[tuple[str, Any]] = [("optimised: answer_and_retrieve()", fast)]
    if not quick:
        variants += [("optimised, fp32", Predictor(base.model, base.folder, base.index, base.ood, base.temperature,
                                                   precision="fp32"))]
        other_layout = Predictor(base.model, base.folder, base.index, base.ood, base.temperature)
        other_layout.fast = FastPath(base.model, other_layout.precision, channels_last=not other_layout.fast.channels_last)
        layout = "on" if other_layout.fast.channels_last else "off"
        variants += [(f"optimised, channels-last {layout}", other_layout)]
        if fast.fast.prepacked:  # the same path with plain modules: what prepacking the weights buys
            unpacked = Predictor(base.model, base.folder, base.index, base.ood, base.temperature)
            unpacked.fast = FastPath(base.model, unpacked.precision, prepack=False)
            variants += [("optimised, weights not prepacked", unpacked)]
    for name, predictor in variants:
        timing = time_path(optimised(predictor), studies, repeats)
        counted = unpacked_twin(predictor)  # the same arithmetic in ops the FLOP counter knows
        flops = model_flops(lambda: optimised(counted)(first, QUESTIONS[0]))  # noqa: B023
        rows.append(bound_row(name, timing, flops, peaks[predictor.precision], predictor.precision))
    if not quick:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        single = [("optimised, 1 thread", fast)] + [("optimised, 1 thread, weights not prepacked", predictor)
                                                     for name, predictor in variants if "not prepacked" in name]
        timings = [(name, time_path(optimised(predictor), studies, repeats)) for name, predictor in single]
        one_thread = measure_peak()  # one core's own peak: more than half the two-core peak here
        torch.set_num_threads(threads)
        machine["one_thread"] = {key: one_thread[key] for key in ("peak_fp32_gflops", "peak_bf16_gflops")}
        for name, timing in timings:
            rows.append(bound_row(name, timing, rows[1]["gflop_per_study"] * 1e9,
                                  one_thread[f"peak_{fast.precision}_gflops"], fast.precision))
    folder = studies[0][0]
    end_to_end = summary(timings_ms(lambda: fast.answer_and_retrieve(folder, QUESTIONS[0], k=5), max(5, repeats // 4)))
    return {"checkpoint": checkpoint, "threads": torch.get_num_threads(), "machine": machine, "paths": rows,
            "speedup_vs_baseline": round(rows[0]["median_ms"] / rows[1]["median_ms"], 2),
            "optimised_precision": fast.precision, "from_dicom_folder": end_to_end,
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
    lines = [f"per-study answer + retrieval top-5, {result['threads']} threads, peak fp32 "
             f"{result['machine']['peak_fp32_gflops']} / bf16 {result['machine']['peak_bf16_gflops']} GFLOP/s",
             f"{'path':<46} {'prec':>5} {'median ms':>9} {'p95 ms':>8} {'GFLOP':>6} {'bound ms':>8} {'ratio':>6}"]
    for row in result["paths"]:
        lines.append(f"{row['path']:<46} {row['precision']:>5} {row['median_ms']:>9.1f} {row['p95_ms']:>8.1f} "
                     f"{row['gflop_per_study']:>6.2f} {row['flop_bound_ms'] or '-':>8} {row['ratio_to_bound'] or '-':>6}")
    if "one_thread" in result["machine"]:
        lines.append(f"one core's own peak (the 1-thread row's bound): fp32 {result['machine']['one_thread']['peak_fp32_gflops']}"
                     f" / bf16 {result['machine']['one_thread']['peak_bf16_gflops']} GFLOP/s")
    lines.append(f"speed-up of the optimised path over the eager fp32 baseline: {result['speedup_vs_baseline']}x; "
                 f"from the DICOM folder (ingest included): {result['from_dicom_folder']['median_ms']:.1f} ms median")
    emit(result, args.json, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
