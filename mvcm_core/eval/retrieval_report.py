"""Both retrieval directions with their baselines: study → report (i2t) and report → study (t2i).

Kept apart from :mod:`mvcm_core.eval.retrieval_metrics` (the metric functions) only for module
size; numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mvcm_core.eval.retrieval_metrics import (
    first_hit_ranks,
    label_precision_at_k,
    label_prior_baseline,
    label_prior_scores,
    random_baseline,
    recall_at_k,
    recall_curve,
)

SEARCH = "exact: dense inner product of L2-normalised embeddings (numpy matmul)"
TIES = "pessimistic: candidates scoring equal to the correct one rank above it"


def direction_report(
    similarity: np.ndarray,
    query_groups: Sequence | np.ndarray,
    candidate_groups: Sequence | np.ndarray,
    query_labels: np.ndarray | None = None,
    candidate_labels: np.ndarray | None = None,
    ks: Sequence[int] = (1, 5, 10),
    curve_max: int = 50,
) -> dict[str, Any]:
    """Model metrics for one direction (call it with re-ranked scores from :func:`rerank` too).

    Args:
        similarity: ``[Q, C]`` scores.
        query_groups: ``[Q]`` duplicate-text group of each query's target.
        candidate_groups: ``[C]`` duplicate-text group of each candidate.
        query_labels: optional ``[Q, L]`` multi-hot; with ``candidate_labels`` enables precision.
        candidate_labels: optional ``[C, L]`` multi-hot.
        ks: cut-offs.
        curve_max: the recall curve covers K = 1..min(curve_max, C).

    Returns:
        ``{"recall", "recall_curve", "precision": {"exact", "overlap"} | None}``.
    """
    k_max = min(curve_max, np.asarray(similarity).shape[1])
    ranks = first_hit_ranks(similarity, query_groups, candidate_groups)
    precision = None
    if query_labels is not None and candidate_labels is not None:
        precision = {
            rule: label_precision_at_k(similarity, query_labels, candidate_labels, ks, rule)
            for rule in ("exact", "overlap")
        }
    return {
        "recall": recall_at_k(similarity, query_groups, candidate_groups, ks),
        "recall_curve": recall_curve(ranks, k_max),
        "precision": precision,
    }


def _random(qg, cg, ql, cl, ks, seed, k_max) -> dict[str, Any]:
    rules = ("exact", "overlap") if ql is not None and cl is not None else ()
    runs = {rule: random_baseline(qg, cg, ql, cl, ks, seed, rule) for rule in rules}
    curve = random_baseline(qg, cg, ks=range(1, k_max + 1))["recall"]
    return {
        "recall": random_baseline(qg, cg, ks=ks)["recall"],
        "recall_curve": [curve[f"R@{k}"] for k in range(1, k_max + 1)],
        "precision": {rule: run["precision"] for rule, run in runs.items()} or None,
    }


def _prior(qg, cg, ql, cl, ks, prior_labels, seed, k_max) -> dict[str, Any] | None:
    if ql is None or cl is None:
        return None
    result = label_prior_baseline(qg, cg, ql, cl, ks, prior_labels, seed)
    # the prior's ranking is the same for every query: its curve comes from its own scores
    scores = np.broadcast_to(label_prior_scores(cl, prior_labels, seed), (len(qg), len(cg)))
    result["recall_curve"] = recall_curve(first_hit_ranks(scores, qg, cg), k_max)
    return result


def _normalised(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def retrieval_report(
    image_embeds: np.ndarray,
    text_embeds: np.ndarray,
    groups: Sequence | np.ndarray,
    labels: np.ndarray | None = None,
    ks: Sequence[int] = (1, 5, 10),
    prior_labels: np.ndarray | None = None,
    curve_max: int = 50,
    seed: int = 0,
    normalise: bool = True,
) -> dict[str, Any]:
    """Study → report (``i2t``) and report → study (``t2i``) metrics beside their baselines.

    Pair ``i`` is study ``i`` with report ``i``; ``groups[i]`` is the report's duplicate-text group,
    so in both directions any item of the same group counts as the target.

    Args:
        image_embeds: ``[N, D]`` study embeddings.
        text_embeds: ``[N, D]`` report embeddings.
        groups: ``[N]`` duplicate-text group ids.
        labels: optional ``[N, L]`` multi-hot finding labels (the same for a study and its report).
        ks: cut-offs.
        prior_labels: labels whose popularity drives the label-prior baseline (use the training
            split); default: the evaluated labels themselves.
        curve_max: recall curves cover K = 1..min(curve_max, N).
        seed: seed of the label-prior tie-break.
        normalise: L2-normalise the embeddings first (cosine similarity).

    Returns:
        ``{"n", "n_groups", "search", "ties", "i2t": {...}, "t2i": {...}}``; each direction holds
        ``model``, ``random`` and ``label_prior`` (``None`` without labels) results.
    """
    image, text = np.asarray(image_embeds), np.asarray(text_embeds)
    if image.shape != text.shape or image.ndim != 2:
        raise ValueError(f"embeddings must both be [N, D], got {image.shape} and {text.shape}")
    if normalise:
        image, text = _normalised(image), _normalised(text)
    similarity = image @ text.T  # [N studies, N reports]
    groups = np.asarray(groups)
    k_max = min(curve_max, len(groups))
    result: dict[str, Any] = {
        "n": len(groups),
        "n_groups": len(np.unique(groups)),
        "search": SEARCH,
        "ties": TIES,
    }
    for name, sim in (("i2t", similarity), ("t2i", similarity.T)):
        result[name] = {
            "model": direction_report(sim, groups, groups, labels, labels, ks, curve_max),
            "random": _random(groups, groups, labels, labels, ks, seed, k_max),
            "label_prior": _prior(groups, groups, labels, labels, ks, prior_labels, seed, k_max),
        }
    return result
