"""What the position heads alone answer: a fixed rule reads them on the questions about where a lesion is.

``python -m training.read_positions --checkpoint CKPT --data DATA [--split test] [--json]``

The side head (from the PA) and the depth head (from the lateral) of a checkpoint with
``heads.position_heads`` are read by a rule, with no training and no seed:
- "which side?" → left or right by the larger probability, bilateral when both pass a threshold that is
  chosen on the validation split; "is it on the left?" → yes when that side (or both) is called;
- "anterior or posterior?" → the larger of the two depth probabilities;
- "which lung, front or back?" → both calls joined.

Each question is read three times: with both views, with the PA only and with the lateral only. A missing
view's call is replaced by the training split's most common answer, which is what a model without that
view can at best do from the words. The table bounds what a VQA head that reads this evidence can gain
from the second view on these questions, and it has no seed-to-seed spread.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from mvcm_core.config import POSITION_DEPTH_TERMS, POSITION_SIDE_TERMS

KINDS = ("laterality", "depth", "localisation")
VIEWS = {"both": ("frontal", "lateral"), "PA only": ("frontal",), "lateral only": ("lateral",)}
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def readable(record: dict[str, Any]) -> bool:
    """A question this rule reads: laterality of a side-head term, depth or localisation of a depth-head term."""
    term, kind = record.get("term"), record.get("content_type")
    return (kind == "laterality" and term in POSITION_SIDE_TERMS) or (kind in KINDS[1:] and term in POSITION_DEPTH_TERMS)


def fallbacks(train: Sequence[dict[str, Any]]) -> dict[str, str]:
    """The most common training answer per question kind: ``side`` / ``closed`` / ``depth``."""
    counts: dict[str, Counter] = {"side": Counter(), "closed": Counter(), "depth": Counter()}
    for record in filter(readable, train):
        answer = record["answer"]
        if record["content_type"] == "laterality":
            counts["closed" if answer in ("yes", "no") else "side"][answer] += 1
        else:
            counts["depth"][answer.split()[-1]] += 1
            if " " in answer:
                counts["side"][answer.split()[0]] += 1
    return {kind: (c.most_common(1)[0][0] if c else "") for kind, c in counts.items()}


def answer(record: dict[str, Any], side: np.ndarray, depth: np.ndarray, views: tuple[str, ...],
           threshold: float, fallback: dict[str, str]) -> str:
    """The rule's answer; ``side`` ``[S, 2]`` (left, right) and ``depth`` ``[D, 2]`` (anterior, posterior) probabilities."""
    term, kind = record["term"], record["content_type"]
    called_side = fallback["side"]
    if "frontal" in views:
        left, right = side[POSITION_SIDE_TERMS.index(term)]
        called_side = "bilateral" if min(left, right) > threshold else "left" if left > right else "right"
    if kind == "laterality":
        if record["answer"] not in ("yes", "no"):
            return called_side
        if "frontal" not in views:
            return fallback["closed"]
        asked = "left" if re.search(r"\bleft\b", record["question"].lower()) else "right"
        return "yes" if called_side in (asked, "bilateral") else "no"
    called_depth = fallback["depth"]
    if "lateral" in views:
        anterior, posterior = depth[POSITION_DEPTH_TERMS.index(term)]
        called_depth = "posterior" if posterior > anterior else "anterior"
    if kind == "depth" or record["answer"] in ("anterior", "posterior"):
        return called_depth
    return f"{called_side} {called_depth}"


def score(records: Sequence[dict[str, Any]], probabilities: dict[str, tuple[np.ndarray, np.ndarray]],
          views: tuple[str, ...], threshold: float, fallback: dict[str, str]) -> dict[str, dict[str, float]]:
    """``kind -> {"n", "accuracy"}`` for each kind and ``all``."""
    hits: dict[str, list[bool]] = {kind: [] for kind in (*KINDS, "all")}
    for record in records:
        side, depth = probabilities[record["study_id"]]
        right = answer(record, side, depth, views, threshold, fallback) == record["answer"]
        hits[record["content_type"]].append(right)
        hits["all"].append(right)
    return {kind: {"n": len(h), "accuracy": float(np.mean(h)) if h else float("nan")} for kind, h in hits.items()}


def head_probabilities(checkpoint: str, data: str, study_ids: set[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``study_id -> (side [S, 2], depth [D, 2])`` sigmoid probabilities of the checkpoint's position heads."""
    import torch

    from mvcm_core.checkpoint import load_pretrained
    from mvcm_core.data.study_store import StudyStore
    from training.probe_trunk import quadrant_features

    model = load_pretrained(checkpoint).eval()
    if getattr(model, "side_head", None) is None:
        raise ValueError(f"{checkpoint} has no position heads (heads.position_heads)")
    store = StudyStore.load(data, model.cfg.preprocess.image_size)
    rows = [i for i, row in enumerate(store.rows) if row["study_id"] in study_ids]
    _, heads = quadrant_features(model, store, rows)
    side = torch.sigmoid(torch.from_numpy(heads["side_logits"])).numpy().reshape(len(rows), -1, 2)  # [N, 2S] -> [N, S, 2]
    depth = torch.sigmoid(torch.from_numpy(heads["depth_logits"])).numpy().reshape(len(rows), -1, 2)  # [N, 2D] -> [N, D, 2]
    return {store.rows[i]["study_id"]: (side[n], depth[n]) for n, i in enumerate(rows)}


def read_positions(checkpoint: str, data: str, split: str = "test") -> dict[str, Any]:
    """The rule's accuracy per view setting and kind, the val-chosen threshold and the majority baseline."""
    from pathlib import Path

    qa = json.loads((Path(data) / "qa.json").read_text())
    by_split = {s: [r for r in qa if r["split"] == s and readable(r)] for s in ("train", "val", split)}
    if not by_split[split]:
        raise ValueError(f"{data}: no {split} questions about where a lesion is (laterality, depth, localisation)")
    probabilities = head_probabilities(checkpoint, data, {r["study_id"] for s in ("val", split) for r in by_split[s]})
    fallback = fallbacks(by_split["train"])
    threshold = max(THRESHOLDS, key=lambda t: score(by_split["val"], probabilities, VIEWS["both"], t, fallback)["all"]
                    ["accuracy"]) if by_split["val"] else 0.5
    majority = {kind: Counter(r["answer"] for r in by_split["train"] if r["content_type"] == kind).most_common(1)
                for kind in KINDS}
    majority_hits = {kind: float(np.mean([r["answer"] == majority[kind][0][0] for r in by_split[split]
                                          if r["content_type"] == kind])) if majority[kind] else float("nan")
                     for kind in KINDS}
    return {"checkpoint": str(checkpoint), "split": split, "threshold": threshold, "fallback": fallback,
            "majority": majority_hits,
            "views": {name: score(by_split[split], probabilities, views, threshold, fallback)
                      for name, views in VIEWS.items()}}


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table (``--json``: the figures)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a checkpoint with position heads")
    parser.add_argument("--data", required=True, help="a build_data folder (qa.json + studies)")
    parser.add_argument("--split", default="test", choices=("val", "test"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        result = read_positions(args.checkpoint, args.data, args.split)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"read_positions: {exc}") from None
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    views = result["views"]
    print(f"{result['checkpoint']}, {result['split']}: the position heads read by rule (bilateral above "
          f"{result['threshold']}, chosen on val)")
    print("| questions | n | train majority | " + " | ".join(views) + " |")
    print("| --- | ---: | ---: |" + " ---: |" * len(views))
    for kind in (*KINDS, "all"):
        cells = " | ".join(f"{100 * views[name][kind]['accuracy']:.1f}" for name in views)
        majority = result["majority"].get(kind)
        shown = "–" if majority is None or math.isnan(majority) else f"{100 * majority:.1f}"
        print(f"| {kind} | {views['both'][kind]['n']} | {shown} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
