"""Med-ITR metrics: duplicate-aware instance Recall@K and label-based Precision@K, with baselines.

Conventions (also in ``docs/evaluation.md``):

* **Exact search**: similarities are dense inner products (a numpy matmul), no approximate index.
* **Duplicate-aware recall**: a query hits at K when *any* candidate whose group id equals the
  query's (identical normalised report text ⇒ same group) is in the top K.
* **Ties never favour the correct item** (default ``ties="pessimistic"``): a candidate whose score
  equals the best correct candidate's is ranked above it. ``ties="optimistic"`` gives the other
  bound; they differ only when scores tie. Precision@K and mAP sort each row by score, then
  non-relevant before relevant among equal scores, then lower index first.
* Label vectors: an all-negative vector stands for an implicit "no finding" label, so normal
  studies can be relevant to each other under both rules.

numpy only: no torch here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

_CHUNK = 1024  # query rows per block: bounds the [chunk, C] temporaries


def _similarity(similarity: np.ndarray) -> np.ndarray:
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[1] == 0:
        raise ValueError(f"similarity must be [Q, C] with C > 0, got shape {sim.shape}")
    if not np.isfinite(sim).all():
        raise ValueError("similarity contains NaN or infinite values")
    return sim


def first_hit_ranks(
    similarity: np.ndarray,
    query_groups: Sequence | np.ndarray,
    candidate_groups: Sequence | np.ndarray,
    ties: str = "pessimistic",
) -> np.ndarray:
    """1-based rank of the best-scored correct candidate of every query.

    Args:
        similarity: ``[Q, C]`` scores, higher is better.
        query_groups: ``[Q]`` group id of each query's target.
        candidate_groups: ``[C]`` group id of each candidate; equal ids are interchangeable targets.
        ties: ``pessimistic`` (wrong candidates with an equal score rank first) or ``optimistic``.

    Returns:
        ``[Q]`` int64 ranks (1 = top).

    Raises:
        ValueError: a query has no correct candidate, or shapes disagree.
    """
    sim = _similarity(similarity)
    qg, cg = np.asarray(query_groups), np.asarray(candidate_groups)
    if qg.shape != (sim.shape[0],) or cg.shape != (sim.shape[1],):
        raise ValueError(f"groups {qg.shape}, {cg.shape} do not match similarity {sim.shape}")
    if ties not in ("pessimistic", "optimistic"):
        raise ValueError(f"ties must be 'pessimistic' or 'optimistic', got {ties!r}")
    ranks = np.empty(sim.shape[0], dtype=np.int64)
    for start in range(0, sim.shape[0], _CHUNK):
        block = sim[start : start + _CHUNK]  # [b, C]
        positive = qg[start : start + _CHUNK, None] == cg[None, :]  # [b, C]
        if not positive.any(axis=1).all():
            bad = start + int(np.flatnonzero(~positive.any(axis=1))[0])
            raise ValueError(f"query {bad} (group {qg[bad]!r}) has no correct candidate")
        best = np.where(positive, block, -np.inf).max(axis=1, keepdims=True)  # [b, 1]
        above = block >= best if ties == "pessimistic" else block > best
        ranks[start : start + len(block)] = (above & ~positive).sum(axis=1) + 1
    return ranks


def recall_at_k(
    similarity: np.ndarray,
    query_groups: Sequence | np.ndarray,
    candidate_groups: Sequence | np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, Any]:
    """Duplicate-aware instance Recall@K, ties against the correct item.

    Args:
        similarity: ``[Q, C]`` scores.
        query_groups: ``[Q]`` target group per query.
        candidate_groups: ``[C]`` group per candidate.
        ks: cut-offs.

    Returns:
        ``{"R@k": float, ...}`` (pessimistic ties), ``optimistic`` (the same with ties in favour),
        ``tied_queries`` (queries whose two bounds differ), ``median_rank``, ``mean_rank``,
        ``n_queries``, ``n_candidates``.
    """
    low = first_hit_ranks(similarity, query_groups, candidate_groups, "pessimistic")
    high = first_hit_ranks(similarity, query_groups, candidate_groups, "optimistic")
    result: dict[str, Any] = {f"R@{k}": float(np.mean(low <= k)) for k in ks}
    result["optimistic"] = {f"R@{k}": float(np.mean(high <= k)) for k in ks}
    result.update(
        tied_queries=int((low != high).sum()),
        median_rank=float(np.median(low)),
        mean_rank=float(np.mean(low)),
        n_queries=int(len(low)),
        n_candidates=int(np.asarray(similarity).shape[1]),
    )
    return result


def recall_curve(ranks: np.ndarray, k_max: int) -> list[float]:
    """Recall@K for K = 1..k_max from :func:`first_hit_ranks` output."""
    ranks = np.asarray(ranks)
    return [float(np.mean(ranks <= k)) for k in range(1, k_max + 1)]


def _binary(labels: np.ndarray) -> np.ndarray:
    """``[N, L]`` bool with a trailing "no finding" column set where no label is positive."""
    labels = np.asarray(labels) > 0
    if labels.ndim != 2:
        raise ValueError(f"labels must be [N, L] multi-hot, got shape {labels.shape}")
    return np.concatenate([labels, ~labels.any(axis=1, keepdims=True)], axis=1)


def label_relevance(
    query_labels: np.ndarray, candidate_labels: np.ndarray, rule: str = "exact"
) -> np.ndarray:
    """``[Q, C]`` bool: candidate relevant to query under ``rule`` (``exact`` or ``overlap``)."""
    ql, cl = _binary(query_labels), _binary(candidate_labels)
    if ql.shape[1] != cl.shape[1]:
        raise ValueError(f"label widths differ: {ql.shape[1]} vs {cl.shape[1]}")
    if rule == "exact":
        _, ids = np.unique(np.concatenate([ql, cl]), axis=0, return_inverse=True)
        ids = ids.reshape(-1)
        return ids[: len(ql), None] == ids[None, len(ql) :]
    if rule == "overlap":
        return (ql.astype(np.int32) @ cl.T.astype(np.int32)) > 0
    raise ValueError(f"rule must be 'exact' or 'overlap', got {rule!r}")


def _pessimistic_order(block: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Row-wise order: score descending, then non-relevant first, then lower index first."""
    index = np.broadcast_to(np.arange(block.shape[1]), block.shape)
    return np.lexsort((index, relevant, -block), axis=-1)


def label_precision_at_k(
    similarity: np.ndarray,
    query_labels: np.ndarray,
    candidate_labels: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    rule: str = "exact",
) -> dict[str, Any]:
    """Label-based Precision@K, Hit@K and mAP.

    A retrieved candidate is relevant when its label vector equals the query's (``exact``, the
    default: with one label per item it is the CheXpert 5×200 "same class" rule, and it does not
    reward a report that shares only the most common finding) or shares at least one positive
    label (``overlap``, lenient). All-negative vectors share the implicit "no finding" label.

    Args:
        similarity: ``[Q, C]`` scores.
        query_labels: ``[Q, L]`` multi-hot.
        candidate_labels: ``[C, L]`` multi-hot.
        ks: cut-offs; a K above C is evaluated at C (precision divides by ``min(K, C)``).
        rule: ``exact`` or ``overlap``.

    Returns:
        ``{"P@k", "Hit@k", "mAP", "rule", "n_queries", "n_without_relevant"}``. Queries with no
        relevant candidate count as 0 in P@K / Hit@K and are left out of mAP.
    """
    sim = _similarity(similarity)
    relevance = label_relevance(query_labels, candidate_labels, rule)
    if relevance.shape != sim.shape:
        raise ValueError(f"labels give {relevance.shape}, similarity is {sim.shape}")
    n_q, n_c = sim.shape
    hits = {k: np.zeros(n_q) for k in ks}
    precision = {k: np.zeros(n_q) for k in ks}
    ap = np.full(n_q, np.nan)
    for start in range(0, n_q, _CHUNK):
        block, rel = sim[start : start + _CHUNK], relevance[start : start + _CHUNK]
        ranked = np.take_along_axis(rel, _pessimistic_order(block, rel), axis=1)  # [b, C] bool
        found = np.cumsum(ranked, axis=1)  # [b, C] relevant within the top (i + 1)
        rows = slice(start, start + len(block))
        for k in ks:
            depth = min(k, n_c)
            precision[k][rows] = found[:, depth - 1] / depth
            hits[k][rows] = found[:, depth - 1] > 0
        n_rel = found[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            ap[rows] = (ranked * found / np.arange(1, n_c + 1)).sum(axis=1) / n_rel
    result: dict[str, Any] = {f"P@{k}": float(precision[k].mean()) for k in ks}
    result.update({f"Hit@{k}": float(hits[k].mean()) for k in ks})
    valid = ~np.isnan(ap)
    result.update(
        mAP=float(ap[valid].mean()) if valid.any() else None,
        rule=rule,
        n_queries=int(n_q),
        n_without_relevant=int((~valid).sum()),
    )
    return result


def topk_candidates(similarity: np.ndarray, k: int) -> np.ndarray:
    """``[Q, k]`` candidate indices by descending score, lower index first among ties (ITC top-k)."""
    sim = _similarity(similarity)
    return np.argsort(-sim, axis=1, kind="stable")[:, : min(k, sim.shape[1])]


def rerank(
    similarity: np.ndarray, topk_indices: np.ndarray, rerank_scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Replace the top-k candidates' scores by re-ranking scores (ITC top-k, then ITM re-rank).

    The re-ranked candidates end up above every other candidate, ordered by ``rerank_scores``;
    the rest keep their original relative order (and ties) below them.

    Args:
        similarity: ``[Q, C]`` first-stage (ITC) scores.
        topk_indices: ``[Q, k]`` candidates that were re-scored (distinct within a row).
        rerank_scores: ``[Q, k]`` second-stage scores (e.g. ITM logit + ITC similarity).

    Returns:
        ``(scores [Q, C], ranking [Q, C])``: scores to feed the metric functions, and the candidate
        indices by descending score (lower index first among ties).
    """
    sim = _similarity(similarity)
    idx = np.asarray(topk_indices, dtype=np.int64)
    new = np.asarray(rerank_scores, dtype=np.float64)
    if idx.shape != new.shape or idx.shape[0] != sim.shape[0]:
        raise ValueError(f"topk_indices {idx.shape} and rerank_scores {new.shape} must be [Q, k]")
    if not np.isfinite(new).all():
        raise ValueError("rerank_scores contains NaN or infinite values")
    floor = new.min(axis=1, keepdims=True) - 1.0  # [Q, 1] strictly below every re-ranked score
    scores = sim - sim.max(axis=1, keepdims=True) + floor  # rank-preserving shift below the floor
    np.put_along_axis(scores, idx, new, axis=1)
    return scores, np.argsort(-scores, axis=1, kind="stable")


def _hypergeometric_hit(n_c: int, n_rel: np.ndarray, k: int) -> np.ndarray:
    """P(at least one of ``n_rel`` relevant items in the top ``k`` of a uniform random order)."""
    k = min(k, n_c)
    miss = np.ones(len(n_rel))
    for i in range(k):
        miss *= np.maximum(n_c - n_rel - i, 0) / (n_c - i)
    return 1.0 - miss


def _expected_ap(n_c: int, n_rel: np.ndarray) -> np.ndarray:
    """E[AP] of a uniform random order: (H_C + (r - 1)/(C - 1) · (C - H_C)) / C."""
    if n_c == 1:
        return np.ones(len(n_rel))
    harmonic = np.sum(1.0 / np.arange(1, n_c + 1))
    return (harmonic + (n_rel - 1) / (n_c - 1) * (n_c - harmonic)) / n_c


def random_baseline(
    query_groups: Sequence | np.ndarray,
    candidate_groups: Sequence | np.ndarray,
    query_labels: np.ndarray | None = None,
    candidate_labels: np.ndarray | None = None,
    ks: Sequence[int] = (1, 5, 10),
    seed: int = 0,
    rule: str = "exact",
    draws: int = 0,
) -> dict[str, Any]:
    """Expected metrics of a uniformly random ranking, in closed form.

    Recall@K and Hit@K are hypergeometric (``1 - C(C-m, K) / C(C, K)`` for ``m`` correct
    candidates), Precision@K is ``r / C`` and mAP uses the closed form of :func:`_expected_ap`.
    With ``draws > 0`` a Monte-Carlo estimate with ``seed`` is added under ``monte_carlo``.

    Returns:
        ``{"recall": {...}, "precision": {...} | None}`` with the keys of :func:`recall_at_k` /
        :func:`label_precision_at_k` (expectations), plus ``monte_carlo`` when requested.
    """
    qg, cg = np.asarray(query_groups), np.asarray(candidate_groups)
    n_c = len(cg)
    n_pos = (qg[:, None] == cg[None, :]).sum(axis=1)
    if (n_pos == 0).any():
        raise ValueError("every query needs at least one correct candidate")
    recall = {f"R@{k}": float(_hypergeometric_hit(n_c, n_pos, k).mean()) for k in ks}
    result: dict[str, Any] = {"recall": recall, "precision": None}
    if query_labels is not None and candidate_labels is not None:
        n_rel = label_relevance(query_labels, candidate_labels, rule).sum(axis=1)
        has = n_rel > 0
        precision: dict[str, Any] = {f"P@{k}": float((n_rel / n_c).mean()) for k in ks}
        precision.update({f"Hit@{k}": float(_hypergeometric_hit(n_c, n_rel, k).mean()) for k in ks})
        precision.update(
            mAP=float(_expected_ap(n_c, n_rel[has]).mean()) if has.any() else None,
            rule=rule,
            n_queries=len(qg),
            n_without_relevant=int((~has).sum()),
        )
        result["precision"] = precision
    if draws > 0:
        result["monte_carlo"] = _monte_carlo(qg, cg, query_labels, candidate_labels, ks, seed, rule, draws)
    return result


def _monte_carlo(qg, cg, query_labels, candidate_labels, ks, seed, rule, draws) -> dict[str, Any]:
    """Average metrics over ``draws`` random score matrices (continuous, so no ties)."""
    rng = np.random.default_rng(seed)
    recalls, precisions = [], []
    for _ in range(draws):
        sim = rng.random((len(qg), len(cg)))
        recalls.append(recall_at_k(sim, qg, cg, ks))
        if query_labels is not None and candidate_labels is not None:
            precisions.append(label_precision_at_k(sim, query_labels, candidate_labels, ks, rule))
    out: dict[str, Any] = {"draws": draws, "seed": seed}
    out["recall"] = {f"R@{k}": float(np.mean([r[f"R@{k}"] for r in recalls])) for k in ks}
    if precisions:
        keys = [f"P@{k}" for k in ks] + [f"Hit@{k}" for k in ks] + ["mAP"]
        out["precision"] = {key: float(np.mean([p[key] for p in precisions])) for key in keys}
    return out


def label_prior_scores(candidate_labels: np.ndarray, prior_labels: np.ndarray | None = None, seed: int = 0):
    """``[C]`` image-free candidate scores: popularity of each candidate's exact label vector.

    Popularity is counted in ``prior_labels`` (e.g. the training split; default: the candidates
    themselves). Equal popularity is broken by the summed marginal frequency of the candidate's
    positive labels, then by a seeded random order (a fair, not a pessimistic, tie-break).
    """
    cand = _binary(candidate_labels)
    prior = cand if prior_labels is None else _binary(prior_labels)
    keys, counts = np.unique(prior, axis=0, return_counts=True)
    lookup = {row.tobytes(): int(n) for row, n in zip(keys, counts)}
    popularity = np.array([lookup.get(row.tobytes(), 0) for row in cand], dtype=np.float64)
    marginal = (cand * prior.mean(axis=0)).sum(axis=1)  # in [0, L + 1)
    jitter = np.random.default_rng(seed).random(len(cand))  # in [0, 1)
    return popularity * (cand.shape[1] + 2) ** 2 + marginal * (cand.shape[1] + 2) + jitter


def label_prior_baseline(
    query_groups: Sequence | np.ndarray,
    candidate_groups: Sequence | np.ndarray,
    query_labels: np.ndarray,
    candidate_labels: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    prior_labels: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The honest "majority" retrieval baseline: one ranking by label popularity for every query.

    Returns:
        ``{"recall": recall_at_k(...), "precision": {"exact": ..., "overlap": ...}}``.
    """
    scores = label_prior_scores(candidate_labels, prior_labels, seed)
    sim = np.broadcast_to(scores, (len(np.asarray(query_groups)), len(scores)))
    return {
        "recall": recall_at_k(sim, query_groups, candidate_groups, ks),
        "precision": {
            rule: label_precision_at_k(sim, query_labels, candidate_labels, ks, rule)
            for rule in ("exact", "overlap")
        },
    }
