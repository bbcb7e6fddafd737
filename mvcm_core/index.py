"""Report retrieval index: L2-normalised embeddings [N, D] plus one record per report.

Backends over one in-memory float32 matrix (the source of truth): ``exact`` (a NumPy matmul and an
``argpartition`` top-k; equal scores rank the lower id first) and ``faiss`` (optional ``faiss-cpu``:
IVF with 8-bit scalar-quantised residuals; ``rerank`` × k candidates are re-scored exactly, so scores
are true cosines; ``nprobe`` is tuned to a target recall@10). ``auto`` is exact below
``auto_threshold`` entries, faiss above when installed. Saved folders hold ``embeddings.npy``
(float16), ``records.jsonl``, ``index.json``, an optional ``scoring.json`` (study → report ranking data of
:mod:`mvcm_core.report_scoring`, valid for exactly these entries) and a sha256 ``manifest.json``; writes
are atomic and loading refuses altered files. numpy only; save/load import :mod:`mvcm_core.checkpoint` for hashing.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mvcm_core.folders import MANIFEST_NAME, sha256_file, staged_folder

BACKENDS = ("auto", "exact", "faiss")
EMBEDDINGS_NAME, RECORDS_NAME, INFO_NAME, SCORING_NAME = "embeddings.npy", "records.jsonl", "index.json", "scoring.json"
FORMAT_VERSION = 1
_QUERY_CHUNK_CELLS = 1 << 24  # query rows per block × N stays under this many scores (64 MB float32)
_MIN_CAPACITY = 1024
PROBE_NOISE = (0.5, 1.0)  # synthetic probe noise norms: cosine ≈ 0.9 and ≈ 0.7 to the source row
_INFO_KEYS = ("format_version", "dim", "count", "backend", "auto_threshold", "target_recall", "rerank",
              "meta")


class IndexIntegrityError(ValueError):
    """A saved index that cannot be trusted or read; the message says why in one line."""


def _import_faiss() -> Any:
    """The ``faiss`` module, or a ValueError naming the package to install."""
    try:
        import faiss  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise ValueError("the faiss backend needs faiss-cpu: pip install faiss-cpu") from None
    return faiss


def _as_unit_rows(array: np.ndarray, dim: int, what: str) -> np.ndarray:
    """Validate a float array [n, D] (or [D]); return it L2-normalised as contiguous float32 [n, D]."""
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{what} must be a float array, got dtype {array.dtype}")
    if array.ndim == 1:
        array = array[None, :]  # [D] -> [1, D]
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"{what} must have shape [n, {dim}], got {array.shape}")
    rows = array.astype(np.float32, order="C", copy=True)  # [n, D], normalised in place below
    if not np.isfinite(rows).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)  # [n, 1]
    if (norms == 0).any():
        raise ValueError(f"{what} has an all-zero row, which cannot be normalised")
    rows /= norms
    return rows


def _check_record(record: Any, position: int) -> dict[str, Any]:
    """A shallow copy of one record after checking its required fields and JSON-serialisability."""
    if not isinstance(record, dict):
        raise ValueError(f"record {position} must be a dict, got {type(record).__name__}")
    for key, kind in (("text", str), ("report_uid", str), ("findings", list), ("attribution", str)):
        if not isinstance(record.get(key), kind):
            raise ValueError(f"record {position} needs {key!r} of type {kind.__name__}")
    if not all(isinstance(finding, dict) for finding in record["findings"]):
        raise ValueError(f"record {position}: 'findings' must be a list of dicts")
    if any(not isinstance(record.get(key, ""), (str, type(None))) for key in ("study_id", "thumbnail")):
        raise ValueError(f"record {position}: 'study_id' and 'thumbnail' must be strings when given")
    try:
        json.dumps(record, ensure_ascii=False)
    except (TypeError, ValueError):
        raise ValueError(f"record {position} is not JSON-serialisable") from None
    return dict(record)


def top_k_stable(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(top_scores, top_ids)`` [q, min(k, n)] per row of ``scores`` [q, n]; ties: lower column first."""
    n = scores.shape[1]
    if k >= n:
        ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # [q, min(k, n)]
    else:
        ids = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # [q, k], unordered
        kth = np.take_along_axis(scores, ids, axis=1).min(axis=1)  # [q]
        for row in np.flatnonzero((scores >= kth[:, None]).sum(axis=1) > k):  # a tie straddles rank k
            ids[row] = np.argsort(-scores[row], kind="stable")[:k]
        top = np.take_along_axis(scores, ids, axis=1)  # [q, k]
        ids = np.take_along_axis(ids, np.lexsort((ids, -top), axis=1), axis=1)  # [q, k] by (-score, id)
    return np.take_along_axis(scores, ids, axis=1), ids


def exact_top_k(unit: np.ndarray, matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner products of ``unit`` [q, D] against ``matrix`` [N, D], by query blocks."""
    block = max(1, _QUERY_CHUNK_CELLS // len(matrix))  # bounds each [block, N] score matrix
    parts = [top_k_stable(unit[start : start + block] @ matrix.T, k) for start in range(0, len(unit), block)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]).astype(np.int64)


class _FaissIVF:
    """IVF + 8-bit scalar quantiser over the index matrix; rebuilt once the index has doubled."""

    def __init__(self, matrix: np.ndarray, rerank: int, seed: int = 0) -> None:
        faiss = _import_faiss()
        n, dim = matrix.shape
        self.nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))  # faiss wants >= 39 training points per list
        self.quantizer = faiss.IndexFlatIP(dim)  # kept referenced: the IVF index does not own it
        self.index = faiss.IndexIVFScalarQuantizer(self.quantizer, dim, self.nlist,
                                                   faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        self.index.cp.seed = seed
        rng = np.random.default_rng(seed)
        sample = min(n, 40 * self.nlist)  # k-means on a sample: 40 points per list is enough for IVF
        self.index.train(matrix if sample == n else matrix[np.sort(rng.choice(n, sample, replace=False))])
        self.index.add(matrix)
        self.built_at, self.rerank, self.nprobe = n, rerank, self.nlist

    def tune_nprobe(self, matrix: np.ndarray, probes: np.ndarray, target: float, k: int = 10,
                    sources: np.ndarray | None = None) -> int:
        """Set and return the smallest power-of-two ``nprobe`` reaching recall@k ``target`` on ``probes``.

        ``sources`` [p]: rows the probes were made from, left out of their truth. Re-scoring is exact, so
        candidate recall is the recall of the search.
        """
        extra = 0 if sources is None else 1
        k = min(k, len(matrix) - extra)
        truth = exact_top_k(probes, matrix, k + extra)[1]  # [p, k + extra]
        if sources is not None:
            truth = np.array([[i for i in row if i != src][:k] for row, src in zip(truth, sources)])  # [p, k]
        nprobe = 1
        while nprobe < self.nlist:
            self.nprobe = nprobe
            found = self.candidates(probes, self.rerank * (k + extra))  # [p, c]
            hits = sum(len(set(t.tolist()).intersection(f.tolist())) for t, f in zip(truth, found))
            if hits >= target * truth.size:
                return nprobe
            nprobe *= 2
        self.nprobe = self.nlist
        return self.nprobe

    def candidates(self, queries: np.ndarray, count: int) -> np.ndarray:
        """Candidate ids [q, count] (``-1`` where the probed lists held fewer)."""
        self.index.nprobe = self.nprobe
        return self.index.search(queries, count)[1]


def synthetic_probes(matrix: np.ndarray, count: int, noise: float, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Unit probes [count, D]: stored rows plus Gaussian noise of norm ≈ ``noise``; and those row ids."""
    rng = np.random.default_rng(seed)
    n, dim = matrix.shape
    sources = rng.choice(n, min(count, n), replace=False)
    probes = matrix[sources] + rng.normal(0, noise / math.sqrt(dim), (len(sources), dim)).astype(np.float32)
    return probes / np.linalg.norm(probes, axis=1, keepdims=True), sources  # [p, D], [p]


class ReportIndex:
    """Cosine-similarity index of report embeddings with one JSON record per entry.

    Args:
        dim: embedding width D.
        backend: ``"auto"``, ``"exact"`` or ``"faiss"``.
        auto_threshold: entry count from which ``"auto"`` switches to faiss (when installed).
        meta: JSON-serialisable provenance saved with the index (model name, checkpoint sha256, ...).
        target_recall: recall@10 the faiss ``nprobe`` is tuned to reach.
        rerank: the faiss backend re-scores ``rerank × k`` candidates exactly.
    """

    def __init__(self, dim: int, backend: str = "auto", *, auto_threshold: int = 100_000,
                 meta: dict[str, Any] | None = None, target_recall: float = 0.97, rerank: int = 4) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "faiss":
            _import_faiss()
        if not 0 < target_recall <= 1 or rerank < 1 or auto_threshold < 1:
            raise ValueError("need 0 < target_recall <= 1, rerank >= 1 and auto_threshold >= 1")
        self.dim, self.backend, self.auto_threshold = dim, backend, auto_threshold
        self.meta: dict[str, Any] = dict(meta or {})
        self.target_recall, self.rerank = target_recall, rerank
        self._matrix = np.empty((0, dim), dtype=np.float32)  # [capacity, D]; rows >= count are unused
        self._count = 0
        self._records: list[dict[str, Any]] = []
        self._uids: set[str] = set()
        self._faiss: _FaissIVF | None = None
        self._tuning_queries: np.ndarray | None = None
        self.scoring: dict[str, Any] | None = None  # per-entry ranking data; add() drops it (it no longer fits)

    def __len__(self) -> int:
        return self._count

    @property
    def records(self) -> Sequence[dict[str, Any]]:
        """Per-entry records in id order (``records[i]``); treat as read-only."""
        return self._records

    @property
    def embeddings(self) -> np.ndarray:
        """Read-only view of the stored unit embeddings [N, D] (float32)."""
        view = self._matrix[: self._count]
        view.flags.writeable = False
        return view

    @property
    def active_backend(self) -> str:
        """The backend a search would use now: ``"exact"`` or ``"faiss"``."""
        if self.backend != "auto":
            return self.backend
        installed = importlib.util.find_spec("faiss") is not None
        return "faiss" if self._count >= self.auto_threshold and installed else "exact"

    def add(self, embeddings: np.ndarray, records: Sequence[dict[str, Any]]) -> None:
        """Append ``embeddings`` [n, D] (normalised here) and their ``records``; all or nothing."""
        rows = _as_unit_rows(embeddings, self.dim, "embeddings")
        if len(records) != len(rows):
            raise ValueError(f"got {len(rows)} embeddings but {len(records)} records")
        checked = [_check_record(record, self._count + i) for i, record in enumerate(records)]
        uids = [record["report_uid"] for record in checked]
        if len(set(uids)) != len(uids):
            raise ValueError("duplicate report_uid within the added records")
        clash = self._uids.intersection(uids)
        if clash:
            raise ValueError(f"report_uid already in the index: {sorted(clash)[:3]}")
        self._reserve(self._count + len(rows))
        self._matrix[self._count : self._count + len(rows)] = rows
        self._count += len(rows)
        self._records.extend(checked)
        self.scoring = None
        self._uids.update(uids)
        if self._faiss is not None:
            if self._count >= 2 * self._faiss.built_at:
                self._faiss = None  # centroids trained on under half the data: rebuild on the next search
            else:
                self._faiss.index.add(rows)

    def stats(self) -> dict[str, Any]:
        """Entry count, capacity, active backend and bytes held by the float32 matrix and by faiss."""
        stats = {"count": self._count, "capacity": len(self._matrix), "backend": self.active_backend,
                 "matrix_bytes": self._matrix.nbytes, "faiss_bytes": 0}
        if self._faiss is not None:
            ivf = self._faiss.index  # codes + 8-byte ids per entry, plus the float32 centroids
            stats.update(nlist=self._faiss.nlist, nprobe=self._faiss.nprobe,
                         faiss_bytes=ivf.ntotal * (ivf.code_size + 8) + self._faiss.nlist * self.dim * 4)
        return stats

    def _reserve(self, needed: int) -> None:
        """Grow the matrix capacity geometrically so repeated adds copy O(N) rows in total."""
        if needed <= len(self._matrix):
            return
        capacity = max(needed, 2 * len(self._matrix), _MIN_CAPACITY)
        grown = np.empty((capacity, self.dim), dtype=np.float32)  # [capacity, D]
        grown[: self._count] = self._matrix[: self._count]
        self._matrix = grown

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` entries by cosine similarity for ``queries`` [q, D] or [D].

        Returns:
            ``(scores [q, k], ids [q, k])``, best first, ``k`` clipped to ``len(self)``.
        """
        if self._count == 0:
            raise ValueError("the index is empty: add() embeddings before search()")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        unit = _as_unit_rows(queries, self.dim, "queries")
        k = min(int(k), self._count)
        if self.active_backend == "faiss":
            return self._search_faiss(unit, k)
        return exact_top_k(unit, self._matrix[: self._count], k)

    def tune(self, queries: np.ndarray | None = None, target: float | None = None) -> int:
        """Build the faiss index if needed and tune its ``nprobe``; returns the chosen ``nprobe``.

        Pass a few hundred real queries (e.g. validation study embeddings; kept for rebuilds) when they
        lie away from the stored rows, as cross-modal queries may. Otherwise probes are stored rows plus
        noise at each ``PROBE_NOISE`` level; the largest need, doubled for headroom, wins.
        """
        if self._count == 0:
            raise ValueError("the index is empty: add() embeddings before tune()")
        if queries is not None:
            self._tuning_queries = _as_unit_rows(queries, self.dim, "queries")
        matrix = self._matrix[: self._count]  # [N, D]
        if self._faiss is None:
            self._faiss = _FaissIVF(matrix, self.rerank)
        target = self.target_recall if target is None else target
        if self._tuning_queries is not None:
            return self._faiss.tune_nprobe(matrix, self._tuning_queries, target)
        needs = []
        for noise in PROBE_NOISE:
            probes, sources = synthetic_probes(matrix, 200, noise)
            needs.append(self._faiss.tune_nprobe(matrix, probes, target, sources=sources))
        self._faiss.nprobe = min(self._faiss.nlist, 2 * max(needs))
        return self._faiss.nprobe

    def _search_faiss(self, unit: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """IVF candidates re-scored exactly; rows with too few candidates fall back to exact search."""
        matrix = self._matrix[: self._count]  # [N, D]
        if self._faiss is None:
            self.tune()
        ids = self._faiss.candidates(unit, min(self._count, self.rerank * k))  # [q, c]
        valid = ids >= 0
        safe = np.where(valid, ids, 0)  # [q, c]
        scores = np.matmul(matrix[safe], unit[:, :, None])[:, :, 0]  # [q, c, D] @ [q, D, 1] -> [q, c]
        scores[~valid] = -np.inf
        top_scores, order = top_k_stable(scores, k)  # [q, k]
        top_ids = np.take_along_axis(safe, order, axis=1).astype(np.int64)  # [q, k]
        by_id = np.lexsort((top_ids, -top_scores), axis=1)  # [q, k]: equal scores, lower id first
        top_scores, top_ids = np.take_along_axis(top_scores, by_id, 1), np.take_along_axis(top_ids, by_id, 1)
        short = valid.sum(axis=1) < k
        if short.any():
            top_scores[short], top_ids[short] = exact_top_k(unit[short], matrix, k)
        return top_scores, top_ids

    def save(self, folder: str | Path) -> Path:
        """Write the index folder atomically (temp folder + rename) and return its path."""
        folder = Path(folder)
        if folder.exists() and any(folder.iterdir()) and not (folder / MANIFEST_NAME).is_file():
            raise ValueError(f"{folder} exists and is not a saved index; refusing to replace it")
        values = (FORMAT_VERSION, self.dim, self._count, self.backend, self.auto_threshold,
                  self.target_recall, self.rerank, self.meta)
        try:
            info = json.dumps(dict(zip(_INFO_KEYS, values)), indent=2)
        except (TypeError, ValueError):
            raise ValueError("index meta must be JSON-serialisable") from None
        with staged_folder(folder) as staging:
            np.save(staging / EMBEDDINGS_NAME, self._matrix[: self._count].astype(np.float16))
            with open(staging / RECORDS_NAME, "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in self._records)
            (staging / INFO_NAME).write_text(info, encoding="utf-8")
            names = [EMBEDDINGS_NAME, RECORDS_NAME, INFO_NAME]
            if self.scoring is not None:
                (staging / SCORING_NAME).write_text(json.dumps(self.scoring), encoding="utf-8")
                names.append(SCORING_NAME)
            files = {name: sha256_file(staging / name) for name in names}
            manifest = {"format_version": FORMAT_VERSION, "files": files}
            (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path, backend: str | None = None) -> ReportIndex:
        """Load a saved index after checking every file against ``manifest.json``.

        Raises:
            IndexIntegrityError: missing, altered or inconsistent files.
        """
        folder = Path(folder)
        info = _verified_info(folder)
        try:
            matrix = np.load(folder / EMBEDDINGS_NAME, allow_pickle=False)
            with open(folder / RECORDS_NAME, encoding="utf-8") as handle:
                records = [json.loads(line) for line in handle if line.strip()]
        except (OSError, ValueError) as exc:
            raise IndexIntegrityError(f"{folder}: unreadable index files ({type(exc).__name__})") from None
        if matrix.shape != (info["count"], info["dim"]) or len(records) != info["count"]:
            raise IndexIntegrityError(f"{folder}: embeddings {matrix.shape} / {len(records)} records do not "
                                      f"match index.json (count {info['count']}, dim {info['dim']})")
        index = cls(info["dim"], backend or info["backend"], auto_threshold=info["auto_threshold"],
                    meta=info["meta"], target_recall=info["target_recall"], rerank=info["rerank"])
        try:
            index.add(matrix, records)
            if SCORING_NAME in info["files"]:
                index.scoring = json.loads((folder / SCORING_NAME).read_text(encoding="utf-8"))
        except ValueError as exc:
            raise IndexIntegrityError(f"{folder}: {exc}") from None
        return index


def _verified_info(folder: Path) -> dict[str, Any]:
    """``index.json`` of a saved index, after checking every file's sha256 against the manifest."""

    if not (folder / MANIFEST_NAME).is_file():
        raise IndexIntegrityError(f"{folder}: no {MANIFEST_NAME}; refusing an unverifiable index")
    try:
        files = dict(json.loads((folder / MANIFEST_NAME).read_text())["files"])
    except (ValueError, KeyError, TypeError):
        raise IndexIntegrityError(f"{folder}: {MANIFEST_NAME} is not a valid manifest") from None
    for name in (EMBEDDINGS_NAME, RECORDS_NAME, INFO_NAME) + ((SCORING_NAME,) if SCORING_NAME in files else ()):
        if name not in files or not (folder / name).is_file():
            raise IndexIntegrityError(f"{folder}: {name} is missing (from the folder or the manifest)")
        if sha256_file(folder / name) != files[name]:
            raise IndexIntegrityError(f"{folder}: {name} does not match its sha256 in the manifest "
                                      "(altered or corrupt)")
    try:
        info = json.loads((folder / INFO_NAME).read_text(encoding="utf-8"))
        missing = [key for key in _INFO_KEYS if key not in info] if isinstance(info, dict) else _INFO_KEYS
    except ValueError:
        raise IndexIntegrityError(f"{folder}: {INFO_NAME} is not valid JSON") from None
    if missing or info["format_version"] != FORMAT_VERSION:
        raise IndexIntegrityError(f"{folder}: {INFO_NAME} lacks {missing} or has an unknown format_version")
    return {**info, "files": files}
