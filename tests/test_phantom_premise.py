"""The multi-view premise on phantom ground truth: laterality needs the PA view, a small posterior
effusion needs the lateral view, and both views together are at least as good as the better one.

A logistic-regression probe on 2x-downsampled pixels of the processed radiographs is trained per view
configuration (PA only, lateral only, both) on a few hundred 64-px (laterality) and 96-px (small effusion) studies with controlled findings;
accuracy is 5-fold cross-validated. Each base anatomy appears equally often with both labels.
The "both" probe concatenates the two views' pixels, so with this little data it may trail the better
single view slightly; it must beat the weaker one clearly.
"""

from __future__ import annotations

import numpy as np
import pytest

from mvcm_core.data.findings import Finding
from mvcm_core.data.phantom.render import render_study

SIZE = 64
POOL = 4  # base anatomies (each is built once; studies reuse them)


def _features(image: np.ndarray) -> np.ndarray:
    n = image.shape[0] // 2
    return image.reshape(n, 2, n, 2).mean(axis=(1, 3)).ravel()  # [(size/2)^2]


def _dataset(make_findings, count: int, seed: int, size: int = SIZE):
    """Render ``count`` studies; ``make_findings(i) -> (findings, label)``. Returns PA, LL features and labels."""
    rows = []
    for i in range(count):
        findings, label = make_findings(i)
        study_seed = seed * 10_000 + i
        anatomy = (i // 2 + seed) % POOL  # pairs (2k, 2k+1) share an anatomy: labels independent of it
        rows.append((anatomy, study_seed, findings, label))
    rows.sort(key=lambda r: r[0])  # reuse each cached anatomy while it is hot
    pa, ll, labels = [], [], []
    for anatomy, study_seed, findings, label in rows:
        out = render_study(findings, study_seed, size, anatomy_id=anatomy)
        pa.append(_features(out["PA"]["image"]))  # the processed (displayed) radiograph
        ll.append(_features(out["LL"]["image"]))
        labels.append(label)
    return np.array(pa), np.array(ll), np.array(labels)


def _probe_accuracy(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=3000))
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    return float(cross_val_score(model, features, labels, cv=folds).mean())


def _accuracies(pa, ll, labels) -> dict[str, float]:
    return {"PA": _probe_accuracy(pa, labels), "LL": _probe_accuracy(ll, labels),
            "both": _probe_accuracy(np.concatenate([pa, ll], axis=1), labels)}


@pytest.mark.slow
def test_laterality_needs_the_frontal_view():
    def make(i):
        side = "left" if i % 2 else "right"
        return [Finding("pleural effusion", side=side, severity="moderate")], i % 2  # visible on both views

    acc = _accuracies(*_dataset(make, 160, seed=1))
    print("laterality probe accuracy:", acc)
    assert acc["PA"] >= 0.85, acc
    assert acc["PA"] - acc["LL"] >= 0.12, acc
    assert acc["both"] >= acc["LL"] + 0.10, acc


@pytest.mark.slow
def test_small_posterior_effusion_needs_the_lateral_view():
    def make(i):
        present = i % 2
        side = ("left", "right")[(i // 4) % 2]
        findings = [Finding("pleural effusion", side=side, severity="small")] if present else [Finding("normal")]
        return findings, present

    acc = _accuracies(*_dataset(make, 320, seed=2, size=96))  # the recess needs a few more pixels
    print("small posterior effusion probe accuracy:", acc)
    assert acc["LL"] >= 0.70, acc
    assert acc["LL"] - acc["PA"] >= 0.12, acc
    assert acc["both"] >= acc["PA"] + 0.08, acc
