"""Study → report scoring: hub scores, findings likelihood, weight selection, index storage, search."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mvcm_core.data.findings import CANONICAL_TERMS
from mvcm_core.index import IndexIntegrityError, ReportIndex
from mvcm_core.report_scoring import (
    HUB_WEIGHTS,
    ReportScoring,
    choose_weights,
    findings_log_likelihood,
    hub_scores,
    label_matrix,
    scored_search,
)

DIM, TERMS = 8, len(CANONICAL_TERMS)


def unit_rows(n: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_hub_scores_are_the_mean_of_the_nearest_reference_cosines():
    reference, gallery = unit_rows(50, 0), unit_rows(7, 1)
    sims = reference @ gallery.T  # [50, 7]
    expected = np.sort(sims, axis=0)[-5:].mean(0)
    np.testing.assert_allclose(hub_scores(reference, gallery, 5), expected, rtol=1e-5)
    np.testing.assert_allclose(hub_scores(reference, gallery, 500), sims.mean(0), rtol=1e-5)  # k clipped to M
    with pytest.raises(ValueError, match="at least one reference"):
        hub_scores(reference[:0], gallery)


def test_findings_log_likelihood_matches_the_elementwise_sum():
    rng = np.random.default_rng(2)
    probs, labels = rng.uniform(0.01, 0.99, (3, TERMS)), (rng.uniform(size=(4, TERMS)) < 0.2).astype(np.float32)
    expected = [[sum(np.log(p[f]) if y[f] else np.log(1 - p[f]) for f in range(TERMS)) for y in labels] for p in probs]
    np.testing.assert_allclose(findings_log_likelihood(probs, labels), expected, rtol=1e-4)
    # the report whose labels the study predicts is the likeliest one
    study = np.where(labels[2] > 0, 0.9, 0.1)[None]
    assert findings_log_likelihood(study, labels)[0].argmax() == 2


def test_a_report_without_vocabulary_findings_counts_as_normal_not_as_the_likeliest_report():
    labels = np.zeros((3, TERMS), dtype=np.float32)
    labels[0, CANONICAL_TERMS.index("opacity")] = 1.0
    labels[1, CANONICAL_TERMS.index("normal")] = 1.0  # report 2 has no finding in the vocabulary
    hesitant = np.full((1, TERMS), 0.05)
    hesitant[0, CANONICAL_TERMS.index("opacity")], hesitant[0, CANONICAL_TERMS.index("normal")] = 0.45, 0.1
    loglik = findings_log_likelihood(hesitant, labels)[0]
    assert loglik[0] > loglik[2] and loglik[1] == pytest.approx(loglik[2])  # read as a normal report
    assert labels[2].sum() == 0  # the caller's array is untouched


def test_label_matrix_reads_terms_and_ignores_unknown_ones():
    matrix = label_matrix([[{"term": "cardiomegaly"}, {"term": "pleural effusion"}], ["normal"],
                           [{"label": "not a term"}], []])
    assert matrix.shape == (4, TERMS)
    assert matrix[0, CANONICAL_TERMS.index("cardiomegaly")] == matrix[0, CANONICAL_TERMS.index("pleural effusion")] == 1
    assert matrix[0].sum() == 2 and matrix[1, 0] == 1 and matrix[2:].sum() == 0


def test_choose_weights_demotes_a_hub_when_it_helps_and_keeps_zero_when_it_does_not():
    # 4 queries, 5 reports; report 4 is a hub scoring 0.9 with every query, the true match scores 0.8
    cosines = np.full((4, 5), 0.1, dtype=np.float32)
    cosines[np.arange(4), np.arange(4)], cosines[:, 4] = 0.8, 0.9
    hub = cosines.mean(0)

    def top1(scores: np.ndarray) -> float:
        return float((scores.argmax(1) == np.arange(4)).mean())

    h, w, grid = choose_weights(cosines, hub, np.zeros_like(cosines), top1, findings_weights=(0.0,))
    assert h == 0.5 and w == 0.0 and len(grid) == len(HUB_WEIGHTS) and grid[0][2] == 0.0 and grid[1][2] == 1.0
    cosines[:, 4] = 0.0  # no hub: every grid point ties, the smallest weights are kept
    assert choose_weights(cosines, cosines.mean(0), np.zeros_like(cosines), top1)[:2] == (0.0, 0.0)


def test_scores_of_candidates_equal_the_full_matrix_gathered():
    rng = np.random.default_rng(3)
    scoring = ReportScoring(hub=rng.uniform(0, 0.5, 6).astype(np.float32), hub_weight=1.0, findings_weight=0.05)
    cosines, probs = rng.uniform(-1, 1, (2, 6)), rng.uniform(0.05, 0.95, (2, TERMS))
    labels = (rng.uniform(size=(6, TERMS)) < 0.3).astype(np.float32)
    full = scoring.scores(cosines, probs, labels)
    np.testing.assert_allclose(full, cosines - scoring.hub + 0.05 * findings_log_likelihood(probs, labels), rtol=1e-5)
    ids = np.array([[5, 0, 2], [1, 1, 4]])
    np.testing.assert_allclose(scoring.scores(np.take_along_axis(cosines, ids, 1), probs, labels, ids),
                               np.take_along_axis(full, ids, 1), rtol=1e-5)
    np.testing.assert_allclose(scoring.scores(cosines, None, labels), cosines - scoring.hub, rtol=1e-6)


def test_json_round_trip_and_a_wrong_count_is_refused():
    scoring = ReportScoring(hub=np.array([0.1, 0.25], dtype=np.float32), hub_weight=0.5, findings_weight=0.02,
                            neighbours=3, selection={"split": "val"})
    again = ReportScoring.from_json(json.loads(json.dumps(scoring.to_json())), count=2)
    np.testing.assert_allclose(again.hub, scoring.hub, atol=1e-5)
    assert (again.hub_weight, again.findings_weight, again.neighbours, again.selection) == (0.5, 0.02, 3, {"split": "val"})
    with pytest.raises(ValueError, match="for an index of 3 reports"):
        ReportScoring.from_json(scoring.to_json(), count=3)
    with pytest.raises(ValueError, match="not a retrieval scoring payload"):
        ReportScoring.from_json({"hub": [0.1]})


def _index_with_scoring(n: int = 40) -> tuple[ReportIndex, ReportScoring, np.ndarray]:
    rng = np.random.default_rng(4)
    terms = [[{"term": CANONICAL_TERMS[int(t)]} for t in rng.choice(TERMS, 2, replace=False)] for _ in range(n)]
    index = ReportIndex(DIM, "exact")
    index.add(unit_rows(n, 5), [{"text": f"report {i}", "report_uid": f"r{i}", "findings": terms[i], "attribution": ""}
                                for i in range(n)])
    scoring = ReportScoring(hub=hub_scores(unit_rows(30, 6), index.embeddings, 4), hub_weight=1.0, findings_weight=0.05)
    index.scoring = scoring.to_json()
    return index, scoring, label_matrix(t for t in terms)


def test_scored_search_equals_the_brute_force_ranking():
    index, scoring, labels = _index_with_scoring()
    query, probs = unit_rows(1, 7), np.random.default_rng(8).uniform(0.05, 0.95, (1, TERMS))
    scores, cosines, ids = scored_search(index, scoring, labels, query, probs, k=5)
    full = scoring.scores(query @ index.embeddings.T, probs, labels)[0]
    np.testing.assert_array_equal(ids, np.argsort(-full, kind="stable")[:5])
    np.testing.assert_allclose(scores, full[ids], rtol=1e-6)
    np.testing.assert_allclose(cosines, (query @ index.embeddings.T)[0, ids], rtol=1e-6)


def test_the_index_saves_its_scoring_under_the_manifest_and_add_drops_it(tmp_path):
    index, scoring, _ = _index_with_scoring()
    folder = index.save(tmp_path / "idx")
    assert "scoring.json" in json.loads((folder / "manifest.json").read_text())["files"]
    loaded = ReportIndex.load(folder)
    np.testing.assert_allclose(ReportScoring.from_json(loaded.scoring, len(loaded)).hub, scoring.hub, atol=1e-5)
    loaded.add(unit_rows(1, 9), [{"text": "new", "report_uid": "new", "findings": [], "attribution": ""}])
    assert loaded.scoring is None  # the hub scores no longer cover every entry
    payload = json.loads((folder / "scoring.json").read_text())
    payload["hub_weight"] = 9.0
    (folder / "scoring.json").write_text(json.dumps(payload))
    with pytest.raises(IndexIntegrityError, match="scoring.json does not match"):
        ReportIndex.load(folder)
