"""Report index: exact search vs brute force, incremental adds, save/load integrity, faiss recall."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from mvcm_core.index import IndexIntegrityError, ReportIndex, top_k_stable

DIM = 16


def unit_rows(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    """Random unit vectors [n, dim] (float32)."""
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def clustered(n: int, centres: np.ndarray, spread: float, seed: int) -> np.ndarray:
    """Unit vectors [n, D] scattered around random ``centres`` [C, D]."""
    rng = np.random.default_rng(seed)
    rows = centres[rng.integers(0, len(centres), n)] + spread * rng.standard_normal((n, centres.shape[1]))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def records(n: int, start: int = 0) -> list[dict]:
    """Minimal valid records with report uids ``r{start}`` .. ``r{start + n - 1}``."""
    return [{"text": f"Report {i}.\nNo acute findings — ünïcode.", "report_uid": f"r{i}",
             "study_id": f"s{i}", "findings": [{"label": "normal", "present": True}],
             "attribution": "synthetic (CC0)"} for i in range(start, start + n)]


def brute_force(matrix: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: full stable argsort of the normalised dot products."""
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    scores = unit @ matrix.T  # [q, N]
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # [q, k]
    return np.take_along_axis(scores, ids, axis=1), ids


def test_exact_search_matches_brute_force():
    data, queries = unit_rows(500), unit_rows(20, seed=1) * 3.0
    index = ReportIndex(DIM, backend="exact")
    index.add(data, records(500))
    scores, ids = index.search(queries, 7)
    ref_scores, ref_ids = brute_force(data, queries, 7)
    assert ids.shape == scores.shape == (20, 7) and ids.dtype == np.int64
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()
    one_scores, one_ids = index.search(queries[0], 3)  # a single [D] query
    assert one_ids.shape == (1, 3) and (one_ids[0] == ref_ids[0, :3]).all()


def test_ties_rank_lower_id_first_and_k_is_clipped():
    scores = np.array([[0.1, 0.5, 0.5, 0.9, 0.5, 0.5]])
    top, ids = top_k_stable(scores, 3)
    assert ids.tolist() == [[3, 1, 2]] and top.tolist() == [[0.9, 0.5, 0.5]]
    index = ReportIndex(4, backend="exact")
    index.add(np.tile(np.eye(4, dtype=np.float32)[:1], (5, 1)), records(5))  # five identical rows
    _, ids = index.search(np.array([1.0, 0, 0, 0]), 50)
    assert ids.tolist() == [[0, 1, 2, 3, 4]]


def test_incremental_add_equals_batch_add():
    data, queries = unit_rows(3000), unit_rows(10, seed=2)
    batch, incremental = ReportIndex(DIM, "exact"), ReportIndex(DIM, "exact")
    batch.add(data, records(3000))
    for start in range(0, 3000, 700):  # crosses the capacity growth
        stop = min(start + 700, 3000)
        incremental.add(data[start:stop], records(stop - start, start))
    assert len(incremental) == 3000 and incremental.records[2999]["report_uid"] == "r2999"
    for got, want in zip(incremental.search(queries, 10), batch.search(queries, 10)):
        np.testing.assert_array_equal(got, want)


def test_add_normalises_and_is_all_or_nothing():
    index = ReportIndex(DIM, "exact")
    index.add(unit_rows(4).astype(np.float64) * 5, records(4))
    np.testing.assert_allclose(np.linalg.norm(index.embeddings, axis=1), 1, atol=1e-6)
    with pytest.raises(ValueError, match="already in the index"):
        index.add(unit_rows(2, seed=3), records(2, start=3))
    assert len(index) == 4 and len(index.records) == 4


@pytest.mark.parametrize(("embeddings", "recs", "message"), [
    (unit_rows(2, dim=DIM + 1), records(2), r"shape \[n, 16\]"),
    (np.full((2, DIM), np.nan, dtype=np.float32), records(2), "NaN or infinite"),
    (np.zeros((1, DIM), dtype=np.float32), records(1), "all-zero row"),
    (np.ones((2, DIM), dtype=np.int64), records(2), "float array"),
    (unit_rows(2), records(3), "2 embeddings but 3 records"),
    (unit_rows(1), [{"text": "x", "report_uid": "u", "findings": []}], "'attribution'"),
    (unit_rows(2), records(1) * 2, "duplicate report_uid"),
    (unit_rows(1), [{**records(1)[0], "extra": object()}], "not JSON-serialisable"),
    (unit_rows(1), [{**records(1)[0], "thumbnail": 3}], "must be strings when given"),
])
def test_bad_add_input_is_refused(embeddings, recs, message):
    with pytest.raises(ValueError, match=message):
        ReportIndex(DIM, "exact").add(embeddings, recs)


def test_bad_search_input_and_construction():
    index = ReportIndex(DIM, "exact")
    with pytest.raises(ValueError, match="index is empty"):
        index.search(unit_rows(1), 5)
    index.add(unit_rows(10), records(10))
    for bad_k in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="k must be an int >= 1"):
            index.search(unit_rows(1), bad_k)
    with pytest.raises(ValueError, match=r"shape \[n, 16\]"):
        index.search(unit_rows(1, dim=8), 3)
    with pytest.raises(ValueError, match="NaN"):
        index.search(np.full(DIM, np.inf), 3)
    with pytest.raises(ValueError, match="backend must be one of"):
        ReportIndex(DIM, backend="annoy")
    with pytest.raises(ValueError, match="dim must be a positive int"):
        ReportIndex(0)


def test_missing_faiss_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes ``import faiss`` fail
    with pytest.raises(ValueError, match="pip install faiss-cpu"):
        ReportIndex(DIM, backend="faiss")
    index = ReportIndex(DIM, backend="auto", auto_threshold=5)
    index.add(unit_rows(10), records(10))
    assert index.active_backend == "exact"


def test_save_load_round_trip(tmp_path):
    data, queries = unit_rows(300), unit_rows(5, seed=4)
    index = ReportIndex(DIM, "exact", meta={"model": "mvcm-tiny", "checkpoint_sha256": "ab" * 32})
    index.add(data, records(300))
    folder = index.save(tmp_path / "idx")
    assert sorted(p.name for p in folder.iterdir()) == ["embeddings.npy", "index.json", "manifest.json",
                                                         "records.jsonl"]
    assert np.load(folder / "embeddings.npy").dtype == np.float16
    info = json.loads((folder / "index.json").read_text())
    assert info["count"] == 300 and info["dim"] == DIM and info["meta"]["model"] == "mvcm-tiny"
    loaded = ReportIndex.load(folder)
    assert len(loaded) == 300 and loaded.meta == index.meta and loaded.backend == "exact"
    assert list(loaded.records) == records(300)  # text verbatim, unicode and newlines included
    (s1, i1), (s2, i2) = index.search(queries, 5), loaded.search(queries, 5)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, atol=2e-3)  # float16 on disk
    index.add(unit_rows(1, seed=9), records(1, start=300))
    index.save(folder)  # overwriting a saved index is allowed and atomic
    assert len(ReportIndex.load(folder)) == 301
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging leftovers


def test_save_refuses_to_replace_a_foreign_folder(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    index = ReportIndex(DIM, "exact")
    index.add(unit_rows(3), records(3))
    with pytest.raises(ValueError, match="not a saved index"):
        index.save(tmp_path / "taken")
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("victim", ["embeddings.npy", "records.jsonl", "index.json", "manifest.json"])
def test_tampered_files_are_refused(tmp_path, victim):
    index = ReportIndex(DIM, "exact")
    index.add(unit_rows(20), records(20))
    folder = index.save(tmp_path / "idx")
    path = folder / victim
    if victim == "manifest.json":
        manifest = json.loads(path.read_text())
        manifest["files"]["records.jsonl"] = "0" * 64
        path.write_text(json.dumps(manifest))
    else:
        data = bytearray(path.read_bytes())
        data[-3] ^= 0x01
        path.write_bytes(bytes(data))
    with pytest.raises(IndexIntegrityError, match="does not match its sha256"):
        ReportIndex.load(folder)


def test_missing_manifest_or_file_is_refused(tmp_path):
    index = ReportIndex(DIM, "exact")
    index.add(unit_rows(3), records(3))
    folder = index.save(tmp_path / "idx")
    (folder / "records.jsonl").unlink()
    with pytest.raises(IndexIntegrityError, match="records.jsonl is missing"):
        ReportIndex.load(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(IndexIntegrityError, match="no manifest.json"):
        ReportIndex.load(folder)


def test_faiss_recall_at_10_on_clustered_vectors():
    pytest.importorskip("faiss")
    dim = 64
    centres = np.random.default_rng(0).standard_normal((50, dim))
    data, queries = clustered(20_000, centres, 0.8, seed=1), clustered(200, centres, 0.8, seed=2)
    exact, approx = ReportIndex(dim, "exact"), ReportIndex(dim, "faiss")
    exact.add(data, records(20_000))
    approx.add(data, records(20_000))
    _, truth = exact.search(queries, 10)
    scores, found = approx.search(queries, 10)
    recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found)])
    assert recall >= 0.95, recall
    exact_cosines = np.einsum("qd,qkd->qk", queries, data[found])  # [q, D] · [q, k, D] -> [q, k]
    np.testing.assert_allclose(scores, exact_cosines, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()
    approx.add(clustered(100, centres, 0.8, seed=3), records(100, start=20_000))  # appended to the built IVF
    _, after = approx.search(approx.embeddings[-1], 1)
    assert after[0, 0] == 20_099
    stats = approx.stats()
    assert stats["backend"] == "faiss" and stats["faiss_bytes"] < stats["matrix_bytes"] / 2  # 8-bit codes
    assert 1 <= approx.tune(queries) <= stats["nlist"]  # tuned on real queries instead of synthetic probes
