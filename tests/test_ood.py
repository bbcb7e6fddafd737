"""OOD scorer: a shifted cluster is flagged, the threshold keeps its quantile, state round-trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mvcm_core.ood import OODScorer, ledoit_wolf_shrinkage

DIM = 24
SIDEWAYS = np.where(np.arange(DIM) % 2 == 0, 1.0, -1.0) / np.sqrt(DIM)  # unit, orthogonal to the centre


def cluster(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """Correlated Gaussian embeddings [n, DIM] around ``2 · ones`` (norm 9.8), moved ``shift`` sideways.

    A sideways move turns the cluster's direction (8 ≈ 39°), which cosine k-NN needs to see it.
    """
    mixing = np.random.default_rng(123).standard_normal((DIM, DIM)) / np.sqrt(DIM)  # same covariance for all
    rows = np.random.default_rng(seed).standard_normal((n, DIM)) @ mixing + 2.0 + shift * SIDEWAYS
    return rows.astype(np.float32)


@pytest.fixture(params=[("mahalanobis", {}), ("mahalanobis", {"shrinkage": 0.1}), ("knn", {"k": 5})],
                ids=["mahalanobis-lw", "mahalanobis-ridge", "knn"])
def fitted(request) -> OODScorer:
    """A scorer of each kind fitted on 2000 in-distribution embeddings and calibrated on 500 more."""
    method, options = request.param
    scorer = OODScorer(method, **options).fit(cluster(2000, seed=0))
    scorer.calibrate(cluster(500, seed=1), quantile=0.99)
    return scorer


def test_shifted_cluster_is_flagged(fitted):
    inside, outside = cluster(400, seed=2), cluster(400, seed=3, shift=8.0)
    assert fitted.is_in_distribution(outside).mean() < 0.05
    assert fitted.is_in_distribution(inside).mean() >= 0.95
    assert fitted.score(outside).mean() > fitted.score(inside).mean()


def test_threshold_respects_the_quantile_on_held_out_samples(fitted):
    held_out = cluster(2000, seed=4)
    assert fitted.is_in_distribution(held_out).mean() >= 0.95
    val = cluster(500, seed=1)
    assert fitted.is_in_distribution(val).mean() >= 0.99  # on the calibration set itself, by construction
    assert fitted.quantile == 0.99


def test_dict_and_npz_round_trips_give_identical_scores(fitted, tmp_path):
    probe = np.concatenate([cluster(50, seed=5), cluster(50, seed=6, shift=3.0)])
    via_json = OODScorer.from_dict(json.loads(json.dumps(fitted.to_dict())))
    via_npz = OODScorer.load(fitted.save(tmp_path / "ood"))
    for restored in (via_json, via_npz):
        np.testing.assert_array_equal(restored.score(probe), fitted.score(probe))
        assert restored.threshold == fitted.threshold and restored.method == fitted.method


def test_ledoit_wolf_shrinkage_behaves():
    rows = cluster(5000, seed=7).astype(np.float64)
    few = cluster(10, seed=8).astype(np.float64)
    many_s = ledoit_wolf_shrinkage(rows - rows.mean(0))
    few_s = ledoit_wolf_shrinkage(few - few.mean(0))
    assert 0.0 <= many_s < few_s <= 1.0  # more samples, less shrinkage
    scorer = OODScorer().fit(few)  # N < D: the shrunk covariance stays invertible
    assert np.isfinite(scorer.score(cluster(5, seed=9))).all()


def test_matches_scikit_learn_ledoit_wolf():
    covariance = pytest.importorskip("sklearn.covariance")
    rows = cluster(300, seed=10).astype(np.float64)
    reference = covariance.LedoitWolf().fit(rows)
    scorer = OODScorer().fit(rows)
    assert scorer.fitted_shrinkage == pytest.approx(reference.shrinkage_, rel=1e-9)
    np.testing.assert_allclose(scorer.score(rows[:20]) ** 2, reference.mahalanobis(rows[:20]), rtol=1e-6)


def test_use_before_fit_or_calibrate_is_refused():
    scorer = OODScorer("knn", k=3)
    with pytest.raises(ValueError, match="not fitted: call fit"):
        scorer.score(cluster(2, seed=0))
    with pytest.raises(ValueError, match="not fitted: call fit"):
        scorer.is_in_distribution(cluster(2, seed=0))
    with pytest.raises(ValueError, match="not fitted"):
        scorer.to_dict()
    scorer.fit(cluster(20, seed=0))
    with pytest.raises(ValueError, match="call calibrate"):
        scorer.is_in_distribution(cluster(2, seed=0))


@pytest.mark.parametrize(("make", "message"), [
    (lambda: OODScorer("isolation-forest"), "method must be one of"),
    (lambda: OODScorer("knn", k=0), "k must be an int >= 1"),
    (lambda: OODScorer(shrinkage=1.5), r"shrinkage must be in \[0, 1\]"),
    (lambda: OODScorer("knn", k=50).fit(cluster(10, seed=0)), "exceeds the 10 training"),
    (lambda: OODScorer().fit(cluster(1, seed=0)), "at least 2"),
    (lambda: OODScorer().fit(np.ones((5, DIM))), "all identical"),
    (lambda: OODScorer().fit(np.arange(10).reshape(5, 2)), "float array"),
    (lambda: OODScorer().fit(np.full((5, DIM), np.nan)), "NaN or infinite"),
    (lambda: OODScorer().fit(cluster(20, seed=0)).score(np.ones((2, DIM + 1))), rf"shape \[n, {DIM}\]"),
    (lambda: OODScorer().fit(cluster(20, seed=0)).calibrate(cluster(5, seed=1), quantile=0.0), "quantile"),
    (lambda: OODScorer.from_dict({"format_version": 1, "method": "knn"}), "no valid 'arrays'"),
])
def test_bad_input_is_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_from_dict_refuses_mismatched_state(fitted):
    state = fitted.to_dict()
    state["method"] = "knn" if fitted.method == "mahalanobis" else "mahalanobis"
    with pytest.raises(ValueError, match="do not fit method"):
        OODScorer.from_dict(state)
