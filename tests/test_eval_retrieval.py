"""Retrieval metrics on hand-made score matrices, and the random baseline against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mvcm_core.eval.retrieval_metrics import (
    first_hit_ranks,
    label_precision_at_k,
    label_prior_baseline,
    label_prior_scores,
    random_baseline,
    recall_at_k,
    rerank,
    topk_candidates,
)
from mvcm_core.eval.retrieval_report import direction_report, retrieval_report


def test_recall_identity_and_misses():
    sim = np.array([[0.9, 0.1, 0.0], [0.2, 0.1, 0.8], [0.0, 0.5, 0.4]])
    r = recall_at_k(sim, [0, 1, 2], [0, 1, 2], ks=(1, 2, 3))
    # ranks of the target: query 0 -> 1, query 1 -> 3, query 2 -> 2
    assert list(first_hit_ranks(sim, [0, 1, 2], [0, 1, 2])) == [1, 3, 2]
    assert (r["R@1"], r["R@2"], r["R@3"]) == (pytest.approx(1 / 3), pytest.approx(2 / 3), 1.0)
    assert r["tied_queries"] == 0 and r["median_rank"] == 2.0 and r["mean_rank"] == 2.0


def test_duplicates_count_as_hits():
    # query 0's own report is candidate 0, but candidate 1 has the same text (same group) and ranks first
    sim = np.array([[0.5, 0.9, 0.1]])
    assert recall_at_k(sim, [7], [7, 7, 8], ks=(1,))["R@1"] == 1.0
    assert recall_at_k(sim, [7], [7, 6, 8], ks=(1,))["R@1"] == 0.0  # not duplicate-aware: a miss


def test_ties_do_not_favour_the_correct_item():
    sim = np.zeros((3, 3))  # everything tied: a constant model must not score R@1 = 1
    r = recall_at_k(sim, [0, 1, 2], [0, 1, 2], ks=(1, 3))
    assert r["R@1"] == 0.0 and r["R@3"] == 1.0
    assert r["optimistic"]["R@1"] == 1.0 and r["tied_queries"] == 3
    # the target's position in the candidate list does not matter
    sim = np.array([[0.5, 0.5, 0.2]])
    for groups in ([1, 0, 0], [0, 1, 0]):
        assert recall_at_k(sim, [1], groups, ks=(1,))["R@1"] == 0.0


def test_recall_input_errors():
    with pytest.raises(ValueError, match="no correct candidate"):
        recall_at_k(np.ones((1, 2)), [5], [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        recall_at_k(np.array([[np.nan, 1.0]]), [0], [0, 1])
    with pytest.raises(ValueError, match="do not match"):
        recall_at_k(np.ones((2, 2)), [0], [0, 1])


LABELS_Q = np.array([[1, 1, 0], [0, 0, 0]])
LABELS_C = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1], [0, 0, 0]])
SIM = np.array([[0.8, 0.9, 0.7, 0.1], [0.8, 0.9, 0.7, 0.1]])  # order: c1, c0, c2, c3


def test_label_precision_exact_vs_overlap():
    exact = label_precision_at_k(SIM, LABELS_Q, LABELS_C, ks=(1, 2, 4), rule="exact")
    overlap = label_precision_at_k(SIM, LABELS_Q, LABELS_C, ks=(1, 2, 4), rule="overlap")
    # query 0 exact: only c0 (rank 2); overlap: c0, c1 (ranks 1, 2)
    # query 1 (no finding): only c3 (rank 4) under both rules
    assert exact["P@1"] == 0.0 and exact["P@2"] == pytest.approx(0.25) and exact["P@4"] == 0.25
    assert overlap["P@1"] == 0.5 and overlap["P@2"] == 0.5 and overlap["P@4"] == pytest.approx(3 / 8)
    assert exact["Hit@2"] == 0.5 and overlap["Hit@1"] == 0.5 and overlap["Hit@4"] == 1.0
    assert exact["mAP"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert overlap["mAP"] == pytest.approx((1.0 + 1 / 4) / 2)
    assert exact["rule"] == "exact" and exact["n_without_relevant"] == 0


def test_label_precision_ties_and_no_relevant():
    sim = np.array([[0.5, 0.5, 0.5]])
    labels_c = np.array([[1, 0], [0, 1], [0, 1]])
    p = label_precision_at_k(sim, np.array([[1, 0]]), labels_c, ks=(1, 2, 3, 10))
    assert p["P@1"] == 0.0 and p["P@2"] == 0.0 and p["P@3"] == pytest.approx(1 / 3)
    assert p["P@10"] == pytest.approx(1 / 3)  # K above C is evaluated at C
    q = label_precision_at_k(sim, np.array([[1, 1]]), labels_c, ks=(1,))
    assert q["P@1"] == 0.0 and q["mAP"] is None and q["n_without_relevant"] == 1
    with pytest.raises(ValueError, match="rule"):
        label_precision_at_k(sim, np.array([[1, 0]]), labels_c, rule="jaccard")


def brute_force_random(qg, cg, ql, cl, ks):
    """Average every metric over all C! orders of the candidates (the same order for every query)."""
    runs = []
    n_c = len(cg)
    for perm in itertools.permutations(range(n_c)):
        sim = np.empty((len(qg), n_c))  # candidate perm[i] gets score -i: perm is the ranking
        sim[:, list(perm)] = -np.arange(n_c, dtype=float)
        runs.append((recall_at_k(sim, qg, cg, ks), label_precision_at_k(sim, ql, cl, ks)))
    recall = {f"R@{k}": np.mean([r[f"R@{k}"] for r, _ in runs]) for k in ks}
    keys = [f"P@{k}" for k in ks] + [f"Hit@{k}" for k in ks] + ["mAP"]
    precision = {key: np.mean([p[key] for _, p in runs]) for key in keys}
    return recall, precision


def test_random_baseline_matches_brute_force():
    qg, cg = np.array([0, 1, 2]), np.array([0, 0, 1, 2, 3])  # query 0 has two correct candidates
    ql = np.array([[1, 0], [0, 1], [0, 0]])
    cl = np.array([[1, 0], [1, 0], [0, 1], [0, 0], [1, 1]])
    ks = (1, 2, 3, 5)
    closed = random_baseline(qg, cg, ql, cl, ks, draws=200, seed=3)
    recall, precision = brute_force_random(qg, cg, ql, cl, ks)
    for key, value in recall.items():
        assert closed["recall"][key] == pytest.approx(value)
        assert closed["monte_carlo"]["recall"][key] == pytest.approx(value, abs=0.08)
    for key, value in precision.items():
        assert closed["precision"][key] == pytest.approx(value), key
    assert closed["recall"]["R@1"] == pytest.approx((2 / 5 + 1 / 5 + 1 / 5) / 3)


def test_rerank_reorders_topk_only():
    sim = np.array([[0.9, 0.8, 0.7, 0.1, 0.1], [0.1, 0.2, 0.3, 0.4, 0.5]])
    top = topk_candidates(sim, 2)
    assert top.tolist() == [[0, 1], [4, 3]]
    scores, order = rerank(sim, top, np.array([[0.2, 0.5], [-3.0, -1.0]]))
    assert order.tolist() == [[1, 0, 2, 3, 4], [3, 4, 2, 1, 0]]
    assert scores[0, 3] == scores[0, 4]  # ties outside the top-k are kept
    groups = [1, 3]
    before = recall_at_k(sim, groups, [0, 1, 2, 3, 4], ks=(1,))["R@1"]
    after = recall_at_k(scores, groups, [0, 1, 2, 3, 4], ks=(1,))["R@1"]
    assert (before, after) == (0.0, 1.0)
    with pytest.raises(ValueError):
        rerank(sim, top, np.ones((2, 3)))


def test_label_prior_ranks_by_popularity():
    cl = np.array([[1, 0], [0, 0], [0, 0], [0, 1], [0, 0]])
    scores = label_prior_scores(cl)
    assert set(np.argsort(-scores)[:3]) == {1, 2, 4}  # the "no finding" vector is most common
    prior = np.array([[0, 1]] * 5 + [[0, 0]])
    assert np.argmax(label_prior_scores(cl, prior)) == 3  # popularity counted in the prior
    result = label_prior_baseline(np.arange(5), np.arange(5), cl, cl, ks=(1,))
    assert result["precision"]["exact"]["P@1"] == pytest.approx(3 / 5)


def test_retrieval_report_perfect_and_baselines():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(12, 8))
    groups = np.arange(12)
    groups[11] = groups[10]  # two identical reports
    labels = (rng.random((12, 4)) < 0.3).astype(int)
    rep = retrieval_report(emb, emb * 3.0, groups, labels, ks=(1, 5))
    assert rep["n"] == 12 and rep["n_groups"] == 11 and "exact" in rep["search"]
    for direction in ("i2t", "t2i"):
        block = rep[direction]
        assert block["model"]["recall"]["R@1"] == 1.0
        assert block["model"]["recall_curve"][0] == 1.0 and len(block["model"]["recall_curve"]) == 12
        assert block["random"]["recall"]["R@1"] < 0.2
        assert block["random"]["recall_curve"][-1] == pytest.approx(1.0)
        assert block["label_prior"]["recall"]["R@1"] < 1.0
        assert block["model"]["precision"]["exact"]["P@1"] == 1.0
    # directions differ when the similarity is not symmetric
    text = emb + rng.normal(scale=2.0, size=emb.shape)
    rep = retrieval_report(emb, text, groups, None)
    assert rep["i2t"]["label_prior"] is None and rep["i2t"]["model"]["precision"] is None
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    sim = unit(emb) @ unit(text).T
    assert rep["t2i"]["model"] == direction_report(sim.T, groups, groups)
