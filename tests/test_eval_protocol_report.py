"""Selection protocol, Markdown report, plots and the package's import hygiene."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mvcm_core.eval as ev
from mvcm_core.eval.protocol import CLEAN_LABEL, LITERATURE_LABEL, SelectionProtocol, carve_validation

EVAL_DIR = Path(ev.__file__).parent


def records(n_studies=40, per_study=3):
    return [
        {"qid": f"{s}-{q}", "study_id": f"study{s:03d}", "answer": "yes"}
        for s in range(n_studies)
        for q in range(per_study)
    ]


def test_carve_validation_keeps_studies_whole_and_is_deterministic():
    items = records()
    train, val = carve_validation(items, fraction=0.25, seed=1)
    train_studies = {r["study_id"] for r in train}
    val_studies = {r["study_id"] for r in val}
    assert not train_studies & val_studies
    assert len(val_studies) == 10 and len(train) + len(val) == len(items)
    assert all(len([r for r in val if r["study_id"] == s]) == 3 for s in val_studies)
    # same seed -> same split, whatever the input order; another seed -> another split
    again_train, again_val = carve_validation(items[::-1], fraction=0.25, seed=1)
    assert {r["qid"] for r in again_val} == {r["qid"] for r in val}
    assert {r["study_id"] for r in carve_validation(items, 0.25, seed=2)[1]} != val_studies
    # order within each side is the input order
    assert [items.index(r) for r in train] == sorted(items.index(r) for r in train)


def test_carve_validation_edges_and_objects():
    class Pair:
        def __init__(self, study_id):
            self.study_id = study_id

    train, val = carve_validation([Pair("a"), Pair("b"), Pair("a")], fraction=0.01)
    assert len({p.study_id for p in val}) == 1 and len(train) + len(val) == 3
    with pytest.raises(ValueError):
        carve_validation(records(), fraction=1.0)
    with pytest.raises(ValueError, match="two distinct"):
        carve_validation(records(n_studies=1), fraction=0.5)
    with pytest.raises(KeyError):
        carve_validation([{"qid": 1}], fraction=0.5)


def test_protocol_labels_and_selection_guard():
    assert ev.label_protocol(False) == CLEAN_LABEL and "carved from train" in CLEAN_LABEL
    assert ev.label_protocol(True) == LITERATURE_LABEL and LITERATURE_LABEL.startswith("LITERATURE PROTOCOL")
    clean, literature = SelectionProtocol(), SelectionProtocol(literature=True)
    assert clean.selection_split == "val" and literature.selection_split == "test"
    clean.check_selection_split("val")
    literature.check_selection_split("test")
    with pytest.raises(ValueError, match="not allowed"):
        clean.check_selection_split("test")


def small_results():
    rec = [
        {"qid": 1, "answer": "yes", "answer_type": "CLOSED", "content_type": "presence", "term": "edema"},
        {"qid": 2, "answer": "left", "answer_type": "OPEN", "content_type": "laterality", "term": "edema"},
        {"qid": 3, "answer": "no", "answer_type": "CLOSED", "content_type": "presence", "term": "mass"},
    ]
    preds = {1: "yes", 2: "right", 3: "no"}
    vqa = ev.vqa_accuracy(rec, preds)
    baselines = ev.majority_baselines(rec, rec)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(6, 4))
    retrieval = ev.retrieval_report(emb, emb, np.arange(6), (rng.random((6, 3)) < 0.5).astype(int))
    return rec, preds, vqa, baselines, retrieval


def test_metrics_markdown_has_protocol_model_and_baselines():
    rec, preds, vqa, baselines, retrieval = small_results()
    # everything evaluate.py writes to metrics.json must serialise as is
    json.dumps([vqa, baselines, retrieval, ev.top_confusions(rec, preds)], allow_nan=False)
    md = ev.metrics_markdown(vqa=vqa, retrieval=retrieval, baselines=baselines, protocol=LITERATURE_LABEL)
    assert md.startswith(f"**Protocol:** {LITERATURE_LABEL}")
    assert "| **model** | 66.7 |" in md
    assert "type_majority baseline" in md and "closed (yes/no)" in md
    assert "**study → report** | 100.0" in md and "  random |" in md and "label prior" in md
    with pytest.raises(ValueError, match="protocol"):
        ev.metrics_markdown(vqa=vqa)


def test_plots_write_pngs(tmp_path):
    rec, preds, vqa, baselines, retrieval = small_results()
    paths = [
        ev.plot_recall_curve(retrieval, tmp_path / "recall.png", CLEAN_LABEL),
        ev.plot_per_finding_accuracy(vqa, baselines, tmp_path / "findings.png", CLEAN_LABEL),
        ev.plot_confusions(ev.top_confusions(rec, preds), tmp_path / "confusions.png", CLEAN_LABEL),
        ev.plot_confusions([], tmp_path / "none.png"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_import_hygiene():
    for name in ("vqa_metrics.py", "retrieval_metrics.py", "retrieval_report.py", "protocol.py", "report.py"):
        assert imported_modules(EVAL_DIR / name) <= {"__future__", "numpy", "mvcm_core", "collections",
                                                     "typing", "re", "unicodedata", "hashlib",
                                                     "dataclasses"}, name
    for path in EVAL_DIR.glob("*.py"):
        assert not imported_modules(path) & {"torch", "training", "demo"}, path.name
    code = "import sys, mvcm_core.eval; print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
