"""``mvcm ask FILES... --question Q`` and ``mvcm retrieve FILES...``: answer a question about one study
and retrieve similar reports with the shipped checkpoint (or ``--checkpoint`` / ``$MVCM_CHECKPOINT``)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", help="the files (or a folder) of one study: DICOM, PNG or JPEG")
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder or Hub id (default: the shipped one)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``ask`` and ``retrieve``."""
    ask = subparsers.add_parser("ask", help="answer a question about one study", description=__doc__)
    _common(ask)
    ask.add_argument("--question", "-q", required=True, help="the question, in English")
    ask.add_argument("--top-k", type=int, default=5, help="alternatives to list (default: %(default)s)")
    ask.set_defaults(func=run_ask)
    retrieve = subparsers.add_parser("retrieve", help="retrieve the reports most similar to one study",
                                     description=__doc__)
    _common(retrieve)
    retrieve.add_argument("--top-k", type=int, default=5, help="reports to return (default: %(default)s)")
    retrieve.set_defaults(func=run_retrieve)
    return ask


def _predictor(args: argparse.Namespace):  # noqa: ANN202 - Predictor, imported lazily
    from mvcm_core.inference import Predictor, default_checkpoint

    return Predictor.from_pretrained(args.checkpoint or default_checkpoint())


def _ood_line(in_distribution: bool | None, score: float | None) -> str:
    if in_distribution is None:
        return "out-of-distribution check: not available for this checkpoint"
    verdict = "in distribution" if in_distribution else "OUT OF DISTRIBUTION: unlike the training studies"
    return f"{verdict} (score {score:.2f})"


def _fail(message: str) -> int:
    import sys

    print(f"mvcm: error: {message}", file=sys.stderr)
    return 2


def run_ask(args: argparse.Namespace) -> int:
    """Print the answer, its alternatives, the OOD flag and the per-view contributions."""
    try:
        answer = _predictor(args).answer(args.files, args.question, top_k=args.top_k)
    except (ValueError, FileNotFoundError) as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(answer.to_dict(), indent=2))
        return 0
    print(f"Q: {answer.question}\nA: {answer.answer} (p = {answer.probability:.2f})")
    print("alternatives: " + ", ".join(f"{a} {p:.2f}" for a, p in answer.alternatives[1:]))
    if answer.view_contributions:
        print("view contributions: " + ", ".join(f"{v} {c:+.2f}" for v, c in answer.view_contributions.items()))
    print(_ood_line(answer.in_distribution, answer.ood_score))
    print("Teaching model trained on simulated radiographs: not a diagnosis.")
    return 0


def run_retrieve(args: argparse.Namespace) -> int:
    """Print the most similar reports with scores and findings."""
    try:
        result = _predictor(args).retrieve(args.files, k=args.top_k)
    except (ValueError, FileNotFoundError) as exc:
        return _fail(str(exc))
    reports = [r.to_dict() for r in result["reports"]]
    if args.json:
        print(json.dumps({**result, "reports": reports}, indent=2))
        return 0
    print(_ood_line(result["in_distribution"], result["ood_score"]))
    for report in reports:
        terms = ", ".join(f["term"] for f in report["findings"]) or "normal"
        print(f"\n#{report['rank']}  score {report['score']:.3f}  [{terms}]  {report['attribution']}")
        print(report["text"])
    return 0
