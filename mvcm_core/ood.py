"""Out-of-distribution scoring of study embeddings: is this study like the ones the model was trained on?

Two scores, higher = further from the training data:

* ``mahalanobis``: distance to the training mean under a shrunk covariance,
  ``(1 - s) · S + s · (tr(S) / D) · I``, with ``s`` the Ledoit-Wolf estimate or a fixed value.
* ``knn``: ``1 - cosine`` to the k-th nearest training embedding (both sides L2-normalised).

``calibrate`` sets the threshold at a quantile of held-out in-distribution scores, so at least that
share of them is accepted. numpy only: no torch here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("mahalanobis", "knn")
FORMAT_VERSION = 1
_CHUNK_CELLS = 1 << 24  # k-NN: query rows per block × N stays under this many similarities


def _as_rows(embeddings: np.ndarray, what: str, dim: int | None = None) -> np.ndarray:
    """Validate finite float embeddings [n, D] (D = ``dim`` when given) and return them as float64."""
    array = np.asarray(embeddings)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{what} must be a float array, got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[1] == 0 or (dim is not None and array.shape[1] != dim):
        raise ValueError(f"{what} must have shape [n, {dim or 'D'}], got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return array.astype(np.float64)


def _unit(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero)."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)  # [n, 1]
    return rows / np.where(norms == 0, 1.0, norms)


def ledoit_wolf_shrinkage(centred: np.ndarray) -> float:
    """Ledoit-Wolf shrinkage of the covariance of ``centred`` [n, D] towards ``(tr(S) / D) · I``."""
    n, dim = centred.shape
    squared = centred**2  # [n, D]
    variances = squared.sum(axis=0) / n  # [D], the diagonal of S
    mu = variances.sum() / dim
    delta_raw = ((centred.T @ centred) ** 2).sum() / n**2  # ||S||_F^2
    beta = ((squared.T @ squared).sum() / n - delta_raw) / (dim * n)
    delta = (delta_raw - 2.0 * mu * variances.sum() + dim * mu**2) / dim
    return 0.0 if delta <= 0 else float(min(beta, delta) / delta)


class OODScorer:
    """Mahalanobis or k-NN out-of-distribution scorer with a calibrated threshold.

    Args:
        method: ``"mahalanobis"`` or ``"knn"``.
        k: neighbour rank for ``knn``.
        shrinkage: fixed covariance shrinkage in [0, 1] for ``mahalanobis``; None = Ledoit-Wolf.
    """

    def __init__(self, method: str = "mahalanobis", *, k: int = 10, shrinkage: float | None = None) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        if shrinkage is not None and not 0.0 <= shrinkage <= 1.0:
            raise ValueError(f"shrinkage must be in [0, 1] or None, got {shrinkage!r}")
        self.method, self.k, self.shrinkage = method, k, shrinkage
        self.arrays: dict[str, np.ndarray] = {}  # fitted state: mean + whitener, or the k-NN bank
        self.fitted_shrinkage: float | None = None
        self.threshold: float | None = None
        self.quantile: float | None = None

    @property
    def dim(self) -> int:
        """Embedding width D seen by ``fit``."""
        self._require_fit()
        return int(self.arrays["mean" if self.method == "mahalanobis" else "bank"].shape[-1])

    def fit(self, train_embeddings: np.ndarray) -> OODScorer:
        """Fit on in-distribution embeddings [N, D]; clears any previous threshold."""
        rows = _as_rows(train_embeddings, "train_embeddings")
        if len(rows) < 2:
            raise ValueError(f"fit needs at least 2 embeddings, got {len(rows)}")
        if self.method == "knn":
            if self.k > len(rows):
                raise ValueError(f"k={self.k} exceeds the {len(rows)} training embeddings")
            self.arrays = {"bank": _unit(rows).astype(np.float32)}  # [N, D]
        else:
            self.arrays = self._fit_mahalanobis(rows)
        self.threshold = self.quantile = None
        return self

    def _fit_mahalanobis(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Mean [D] and whitener [D, D] such that the score is ``||(x - mean) @ whitener||``."""
        mean = rows.mean(axis=0)
        centred = rows - mean  # [N, D]
        dim = rows.shape[1]
        sample_cov = centred.T @ centred / len(rows)  # [D, D]
        mu = np.trace(sample_cov) / dim
        if mu <= 0:
            raise ValueError("train_embeddings are all identical: the covariance is zero")
        shrink = ledoit_wolf_shrinkage(centred) if self.shrinkage is None else float(self.shrinkage)
        self.fitted_shrinkage = shrink
        cov = (1.0 - shrink) * sample_cov + shrink * mu * np.eye(dim)  # [D, D]
        eigenvalues, eigenvectors = np.linalg.eigh(cov)
        eigenvalues = np.maximum(eigenvalues, 1e-9 * mu)  # keeps the inverse finite when N < D and s = 0
        return {"mean": mean, "whitener": eigenvectors / np.sqrt(eigenvalues)}  # [D], [D, D]

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """OOD scores [n] (float64) of ``embeddings`` [n, D]; higher = further from the training data."""
        self._require_fit()
        rows = _as_rows(embeddings, "embeddings", self.dim)
        if self.method == "mahalanobis":
            whitened = (rows - self.arrays["mean"]) @ self.arrays["whitener"]  # [n, D]
            return np.linalg.norm(whitened, axis=1)
        bank = self.arrays["bank"]  # [N, D]
        queries = _unit(rows).astype(np.float32)  # [n, D]
        block = max(1, _CHUNK_CELLS // len(bank))
        kth = [np.partition(queries[start : start + block] @ bank.T, len(bank) - self.k, axis=1)[:, -self.k]
               for start in range(0, len(queries), block)]  # each [block]: the k-th largest similarity
        return 1.0 - np.concatenate(kth).astype(np.float64) if kth else np.zeros(0)

    def calibrate(self, val_embeddings: np.ndarray, quantile: float = 0.99) -> float:
        """Set ``threshold`` so that at least ``quantile`` of ``val_embeddings`` [n, D] are accepted.

        Use in-distribution embeddings the scorer was not fitted on. Returns the threshold.
        """
        if not 0.0 < quantile <= 1.0:
            raise ValueError(f"quantile must be in (0, 1], got {quantile!r}")
        scores = self.score(val_embeddings)
        if len(scores) == 0:
            raise ValueError("calibrate needs at least one validation embedding")
        self.threshold = float(np.quantile(scores, quantile, method="higher"))
        self.quantile = float(quantile)
        return self.threshold

    def is_in_distribution(self, embeddings: np.ndarray) -> np.ndarray:
        """Boolean mask [n]: score at or below the calibrated threshold."""
        if self.threshold is None:
            self._require_fit()
            raise ValueError("OODScorer has no threshold: call calibrate() first")
        return self.score(embeddings) <= self.threshold

    def _require_fit(self) -> None:
        """Raise a one-line ValueError when ``fit`` has not run."""
        if not self.arrays:
            raise ValueError("OODScorer is not fitted: call fit() first")

    def _config(self) -> dict[str, Any]:
        """Everything but the arrays, JSON-serialisable."""
        return {"format_version": FORMAT_VERSION, "method": self.method, "k": self.k,
                "shrinkage": self.shrinkage, "fitted_shrinkage": self.fitted_shrinkage,
                "threshold": self.threshold, "quantile": self.quantile}

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (arrays as nested lists; exact round trip of float64 and float32)."""
        self._require_fit()
        arrays = {name: {"dtype": str(array.dtype), "data": array.tolist()}
                  for name, array in self.arrays.items()}
        return {**self._config(), "arrays": arrays}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> OODScorer:
        """Rebuild a scorer written by :meth:`to_dict`."""
        try:
            arrays = {name: np.asarray(item["data"], dtype=np.dtype(item["dtype"]))
                      for name, item in state["arrays"].items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ValueError("OOD state has no valid 'arrays' entry") from None
        return cls._restore(state, arrays)

    @classmethod
    def _restore(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> OODScorer:
        """A scorer from its config and fitted arrays, checking that they belong together."""
        if config.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unknown OOD state format_version {config.get('format_version')!r}")
        try:
            scorer = cls(config["method"], k=config["k"], shrinkage=config["shrinkage"])
        except KeyError as missing:
            raise ValueError(f"OOD state lacks {missing}") from None
        expected = {"mean", "whitener"} if scorer.method == "mahalanobis" else {"bank"}
        if set(arrays) != expected:
            raise ValueError(f"OOD state arrays {sorted(arrays)} do not fit method {scorer.method!r}")
        scorer.arrays = arrays
        scorer.fitted_shrinkage = config.get("fitted_shrinkage")
        scorer.threshold, scorer.quantile = config.get("threshold"), config.get("quantile")
        return scorer

    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` holding the arrays and a JSON config string; returns the path."""
        self._require_fit()
        path = Path(path).with_suffix(".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, config=np.array(json.dumps(self._config())), **self.arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> OODScorer:
        """Read a scorer written by :meth:`save` (no pickle)."""
        try:
            with np.load(Path(path), allow_pickle=False) as archive:
                config = json.loads(str(archive["config"]))
                arrays = {name: archive[name] for name in archive.files if name != "config"}
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"{path}: not a saved OOD scorer ({type(exc).__name__})") from None
        return cls._restore(config, arrays)
