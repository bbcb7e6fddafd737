"""Study → report ranking scores beyond the raw cosine: a hubness correction and a findings likelihood.

``score(q, r) = cos(q, r) − hub_weight · hub(r) + findings_weight · log P(y_r | p_q)``

- ``hub(r)``: the mean cosine of report ``r`` to its ``neighbours`` nearest *reference* studies (the
  target-side term of CSLS, Lample et al. 2018). Contrastive embedding spaces have hubs: a few reports
  sit close to every study and crowd every top-5; subtracting their typical similarity demotes them.
  The reference studies are the training split, never the split being queried.
- ``log P(y_r | p_q) = Σ_f y_rf log p_qf + (1 − y_rf) log(1 − p_qf)``: how well the study's predicted
  findings (the model's findings head, probabilities ``p_q``) explain the report's labels ``y_r``.

Both weights are chosen on validation (:func:`choose_weights`), never on test. The score is linear in
the report's features, so it stays a dot product: ``[q, w·logit(p_q), 1] · [e_r, y_r, −h·hub_r]`` plus
a per-query constant. numpy only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mvcm_core.data.findings import CANONICAL_TERMS

HUB_WEIGHTS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
FINDINGS_WEIGHTS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
_EPS = 1e-4
_BLOCK = 2048


def hub_scores(reference: np.ndarray, gallery: np.ndarray, neighbours: int = 10) -> np.ndarray:
    """Mean cosine of each gallery row to its ``neighbours`` nearest reference rows.

    Args:
        reference: ``[M, D]`` unit study embeddings (training split).
        gallery: ``[N, D]`` unit report embeddings.
        neighbours: how many nearest reference studies to average (clipped to M).

    Returns:
        ``[N]`` float32.
    """
    if len(reference) == 0:
        raise ValueError("hub_scores needs at least one reference study")
    k = max(1, min(int(neighbours), len(reference)))
    out = np.empty(len(gallery), dtype=np.float32)
    for start in range(0, len(gallery), _BLOCK):
        sims = reference @ gallery[start:start + _BLOCK].T  # [M, block]
        out[start:start + _BLOCK] = np.partition(sims, len(reference) - k, axis=0)[-k:].mean(0)
    return out


def label_matrix(findings_per_report: Iterable[Sequence[Any]]) -> np.ndarray:
    """``[N, F]`` multi-hot labels over CANONICAL_TERMS from each report's findings (dicts or terms)."""
    rows = []
    for findings in findings_per_report:
        row = np.zeros(len(CANONICAL_TERMS), dtype=np.float32)
        for finding in findings:
            term = finding.get("term") if isinstance(finding, dict) else str(finding)
            if term in CANONICAL_TERMS:
                row[CANONICAL_TERMS.index(term)] = 1.0
        rows.append(row)
    return np.stack(rows) if rows else np.zeros((0, len(CANONICAL_TERMS)), dtype=np.float32)


def likelihood_labels(labels: np.ndarray) -> np.ndarray:
    """Labels as the likelihood sees them: a report with no finding in the vocabulary counts as normal.

    Such reports name only unmapped terms (technical remarks, old surgery); their studies render as
    normal ones. Left all-zero they would be "neither normal nor abnormal", the likeliest labels under
    any uncertain prediction, and crowd the top of every hesitant study's list.
    """
    labels = np.array(labels, dtype=np.float32)  # a copy: the caller's labels stay as they are
    labels[labels.sum(-1) == 0, CANONICAL_TERMS.index("normal")] = 1.0
    return labels


def findings_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``[Q, N]`` log-likelihood of each report's labels ``[N, F]`` under each study's findings ``[Q, F]``
    (labels through :func:`likelihood_labels`)."""
    p = np.clip(np.asarray(probabilities, dtype=np.float32), _EPS, 1 - _EPS)
    labels = likelihood_labels(labels)
    return np.log(p) @ labels.T + np.log1p(-p) @ (1 - labels).T  # [Q, F] @ [F, N] -> [Q, N]


@dataclass
class ReportScoring:
    """The ranking weights of one index and the hub score of each of its reports (see the module doc).

    Attributes:
        hub: ``[N]`` hub score per indexed report, in index order.
        hub_weight: weight of the hub penalty.
        findings_weight: weight of the findings log-likelihood.
        neighbours: reference studies averaged per hub score.
        selection: how the weights were chosen (split, metric, the grid's values).
    """

    hub: np.ndarray
    hub_weight: float
    findings_weight: float
    neighbours: int = 10
    selection: dict[str, Any] = field(default_factory=dict)

    def scores(self, cosines: np.ndarray, probabilities: np.ndarray | None, labels: np.ndarray,
               ids: np.ndarray | None = None) -> np.ndarray:
        """Ranking scores ``[Q, C]`` from cosines ``[Q, C]`` of candidate reports ``ids [Q, C]`` (all if None).

        Args:
            cosines: study-report cosines of the candidates.
            probabilities: ``[Q, F]`` findings probabilities of the studies (None: no findings term).
            labels: ``[N, F]`` labels of every indexed report.
            ids: candidate report ids; None means the columns are reports ``0..N-1``.
        """
        hub = self.hub if ids is None else self.hub[ids]  # [N] or [Q, C]
        scores = cosines - self.hub_weight * hub
        if probabilities is not None and self.findings_weight:
            if ids is None:
                scores = scores + self.findings_weight * findings_log_likelihood(probabilities, labels)
            else:
                p = np.clip(np.asarray(probabilities, dtype=np.float32), _EPS, 1 - _EPS)  # [Q, F]
                picked = likelihood_labels(labels[ids])  # [Q, C, F]
                loglik = (picked * np.log(p)[:, None] + (1 - picked) * np.log1p(-p)[:, None]).sum(-1)  # [Q, C]
                scores = scores + self.findings_weight * loglik
        return scores.astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (hub scores rounded to 1e-5), as saved in an index's ``scoring.json``."""
        return {**asdict(self), "hub": [round(float(v), 5) for v in self.hub]}

    @classmethod
    def from_json(cls, payload: dict[str, Any], count: int | None = None) -> ReportScoring:
        """The inverse of :meth:`to_json`; ``count`` (the index size) is checked against the hub scores.

        Raises:
            ValueError: a malformed payload or one for a different number of reports.
        """
        try:
            scoring = cls(hub=np.asarray(payload["hub"], dtype=np.float32), hub_weight=float(payload["hub_weight"]),
                          findings_weight=float(payload["findings_weight"]), neighbours=int(payload["neighbours"]),
                          selection=dict(payload.get("selection", {})))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not a retrieval scoring payload ({type(exc).__name__})") from None
        if scoring.hub.ndim != 1 or (count is not None and len(scoring.hub) != count):
            raise ValueError(f"{scoring.hub.shape} hub scores for an index of {count} reports")
        return scoring


def scored_search(index: Any, scoring: ReportScoring, labels: np.ndarray, query: np.ndarray,
                  probabilities: np.ndarray | None, k: int, pool: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``k`` reports of a :class:`~mvcm_core.index.ReportIndex` under ``scoring`` for one study.

    The exact backend scores every entry; the approximate one re-scores its ``max(pool, 8k)`` cosine
    candidates.

    Args:
        index: the index (``embeddings``, ``search``, ``active_backend``).
        scoring: its scoring (one hub score per entry).
        labels: ``[N, F]`` labels of its entries (:func:`label_matrix` of the records' findings).
        query: ``[1, D]`` unit study embedding.
        probabilities: ``[1, F]`` findings probabilities of the study, or None.

    Returns:
        ``(scores [k], cosines [k], ids [k])``, best first; equal scores keep the lower id first.
    """
    if index.active_backend == "exact":
        cosines = (index.embeddings @ query[0])[None]  # [N, D] @ [D] -> [1, N]
        ids = np.arange(len(index))[None]  # [1, N]
        scores = scoring.scores(cosines, probabilities, labels)[0]  # [N]
    else:
        cosines, ids = index.search(query, min(len(index), max(pool, 8 * k)))  # [1, C]
        scores = scoring.scores(cosines, probabilities, labels, ids)[0]  # [C]
    order = np.lexsort((ids[0], -scores))[:k]
    return scores[order], cosines[0, order], ids[0, order]


def choose_weights(cosines: np.ndarray, hub: np.ndarray, loglik: np.ndarray,
                   metric: Callable[[np.ndarray], float], hub_weights: Sequence[float] = HUB_WEIGHTS,
                   findings_weights: Sequence[float] = FINDINGS_WEIGHTS) -> tuple[float, float, list[list[float]]]:
    """Grid-search the two weights on a validation split.

    Args:
        cosines: ``[Q, N]`` validation study-report cosines.
        hub: ``[N]`` hub scores of the validation reports (reference: training studies).
        loglik: ``[Q, N]`` findings log-likelihoods.
        metric: maps a ``[Q, N]`` score matrix to the figure to maximise.

    Returns:
        ``(hub_weight, findings_weight, grid)``: ``grid`` rows are ``[hub_weight, findings_weight, metric]``;
        ties keep the smaller weights (earlier in the grid).
    """
    grid = []
    for h in hub_weights:
        for w in findings_weights:
            grid.append([float(h), float(w), round(float(metric(cosines - h * hub[None, :] + w * loglik)), 5)])
    best = max(grid, key=lambda row: row[2])  # max() keeps the first of equal rows
    return best[0], best[1], grid
