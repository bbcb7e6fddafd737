"""Accuracy of the optimised Predictor path against the plain eager fp32 path on the VQA test split.

Run: ``python -m benchmarks.bench_accuracy [--data runs/build/data] [--checkpoint DIR] [--limit N] [--json]``.
Every test question goes through ``Predictor.question_probabilities`` of both paths (one call per
study, its questions batched); reported are each path's exact-match accuracy, the share of
questions whose answers agree, the largest probability difference, and the top-5 retrieved-report
agreement of the two paths on the same studies. Prints figures; never asserts.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks.common import REPO, emit


def test_studies(data: Path, size: int, limit: int | None) -> list[tuple[list, list[dict[str, Any]]]]:
    """(model views with labels, its test questions) per test study of a built dataset."""
    from mvcm_core.data.study_store import StudyStore
    from mvcm_core.data.vqa_dataset import examples_from_store

    store = StudyStore.load(data, size, mmap=True)
    qa = json.loads((data / "qa.json").read_text())
    grouped: dict[str, list] = defaultdict(list)
    for example in examples_from_store(store, qa, "test"):
        grouped[example.study_id].append(example)
    studies = []
    for examples in list(grouped.values())[:limit]:
        study = [(np.asarray(v), label) for v, label in zip(examples[0].views, examples[0].view_labels)]
        studies.append((study, [{"question": e.question, "answer": e.answer} for e in examples]))
    return studies


def run(checkpoint: str, data: Path, limit: int | None) -> dict[str, Any]:
    """Both paths over the test split: accuracies, agreement, probability difference, retrieval overlap."""
    from mvcm_core.inference import Predictor

    base = Predictor.from_pretrained(checkpoint, optimize=False)
    fast = Predictor(base.model, base.folder, base.index, base.ood, base.temperature)
    studies = test_studies(data, base.cfg.preprocess.image_size, limit)
    correct = {"baseline": 0, "optimised": 0}
    agree, total, max_diff, overlaps = 0, 0, 0.0, []
    for study, questions in tqdm(studies, desc="test studies", leave=False):
        texts = [q["question"] for q in questions]
        p_base, p_fast = base.question_probabilities(study, texts), fast.question_probabilities(study, texts)
        max_diff = max(max_diff, float(np.abs(p_base - p_fast).max()))
        for q, row_base, row_fast in zip(questions, p_base, p_fast):
            a_base, a_fast = base.answers[int(row_base.argmax())], base.answers[int(row_fast.argmax())]
            correct["baseline"] += a_base == q["answer"]
            correct["optimised"] += a_fast == q["answer"]
            agree += a_base == a_fast
            total += 1
        if base.index is not None:
            ids_base = {r.report_uid for r in base.retrieve(study, 5)["reports"]}
            ids_fast = {r.report_uid for r in fast.retrieve(study, 5)["reports"]}
            overlaps.append(len(ids_base & ids_fast) / 5)
    accuracy = {path: round(100 * hits / max(total, 1), 2) for path, hits in correct.items()}
    return {"checkpoint": checkpoint, "data": str(data), "studies": len(studies), "questions": total,
            "optimised_precision": fast.precision, "baseline_accuracy": accuracy["baseline"],
            "optimised_accuracy": accuracy["optimised"],
            "accuracy_difference_points": round(accuracy["optimised"] - accuracy["baseline"], 2),
            "answer_agreement": round(agree / max(total, 1), 4), "max_probability_difference": round(max_diff, 4),
            "retrieval_top5_overlap": round(float(np.mean(overlaps)), 4) if overlaps else None}


def main(argv: Sequence[str] | None = None) -> int:
    """Print the accuracy comparison."""
    from mvcm_core.inference import default_checkpoint

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--data", type=Path, default=REPO / "runs" / "build" / "data")
    parser.add_argument("--limit", type=int, default=None, help="only the first N test studies")
    parser.add_argument("--quick", action="store_true", help="the first 20 test studies")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not (args.data / "qa.json").is_file():
        parser.error(f"no built dataset at {args.data}; pass --data (python -m training.build_data)")
    result = run(args.checkpoint or default_checkpoint(), args.data, 20 if args.quick else args.limit)
    lines = [f"VQA test split, {result['questions']} questions over {result['studies']} studies "
             f"(optimised path: {result['optimised_precision']})",
             f"  accuracy: baseline eager fp32 {result['baseline_accuracy']}%, optimised {result['optimised_accuracy']}% "
             f"({result['accuracy_difference_points']:+.2f} points)",
             f"  same answer: {100 * result['answer_agreement']:.2f}%; largest probability difference "
             f"{result['max_probability_difference']}; retrieval top-5 overlap {result['retrieval_top5_overlap']}"]
    emit(result, args.json, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
