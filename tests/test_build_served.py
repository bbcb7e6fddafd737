"""training.build_served end to end on tiny data: every stage, the packaged folder, the Predictor on it."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import TINY_OVERRIDES

from mvcm_core.checkpoint import read_manifest
from mvcm_core.inference import Predictor
from training.build_served import main as build_served_main


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    steps = {"train": {"steps": 3, "batch_size": 8, "warmup_steps": 1, "bf16": False}, "model_overrides": TINY_OVERRIDES}
    config = {
        "name": "tiny-served", "seed": 0, "work": str(root / "work"), "dest": str(root / "assets/checkpoints/tiny"),
        "assets_manifest": str(root / "assets/MANIFEST.json"),
        "data": {"size": 32, "source": "random", "limit": 48, "renders": 1, "workers": 1, "anatomies": 1},
        "image_warmup": {"config": "image_warmup", "overrides": {**steps, "model": "mvcm-tiny"}},
        "pretrain": {"config": "pretrain_tiny", "overrides": {**steps, "losses": {"ot_align": {"weight": 0}}}},
        "position_warmup": {"config": "image_warmup", "overrides": {
            **steps, "model_overrides": {"heads": {"position_heads": True}}, "losses": {"positions": {"weight": 1.0}}}},
        "retrieval": {"config": "finetune_retrieval", "overrides": steps},
        "vqa": {"config": "finetune_vqa", "overrides": {"train": {"epochs": 1, "batch_size": 16, "bf16": False}}},
        "rerank_k": 4, "ood": {"method": "mahalanobis", "quantile": 0.95},
        "studies": {"count": 3, "lateral_only": 1, "size": 64, "out": str(root / "assets/studies")},
    }
    path = root / "served.yaml"
    path.write_text(yaml.safe_dump(config))
    assert build_served_main(["--config", str(path)]) == 0
    return root, config


def test_the_served_folder_is_complete_and_verified(built):
    root, config = built
    dest = root / "assets/checkpoints/tiny"
    manifest = read_manifest(dest)  # every listed file checked against its sha256
    for name in ("config.json", "model.safetensors", "ood.npz", "calibration.json", "index/embeddings.npy",
                 "index/scoring.json", "MODEL_CARD.md", "eval/vqa_test.md"):
        assert name in manifest["files"], name
    # packaging itself is still running when the manifest is written: it is in the log's summary only
    assert set(manifest["metrics"]["build_seconds"]) == {"data", "image warm-up", "pretrain", "position warm-up",
                                                         "retrieval", "vqa", "evaluate"}
    pretrain_config = yaml.safe_load((root / "work/pretrain/config.resolved.yaml").read_text())
    assert pretrain_config["init"] == str(root / "work/image_warmup/checkpoint")  # pretraining starts from it
    retrieval_config = yaml.safe_load((root / "work/retrieval/config.resolved.yaml").read_text())
    assert retrieval_config["init"] == str(root / "work/position_warmup/checkpoint")  # and retrieval from this
    assert json.loads((dest / "config.json").read_text())["model"]["heads"]["position_heads"]
    assert manifest["command"].startswith("python -m training.build_served")
    assert "vqa_test_question_majority" in manifest["metrics"]
    assert {"label_P@5_overlap", "scored_label_P@5_overlap", "scored_R@5"} <= set(
        manifest["metrics"]["retrieval_test_study_to_report"])
    assert "not a medical device" in (dest / "MODEL_CARD.md").read_text().lower() or \
        "never use it for diagnosis" in (dest / "MODEL_CARD.md").read_text()


def test_the_predictor_serves_the_built_checkpoint_and_sample_studies(built):
    root, _ = built
    predictor = Predictor.from_pretrained(root / "assets/checkpoints/tiny")
    studies = sorted(p for p in (root / "assets/studies").iterdir() if p.is_dir())
    assert len(studies) == 3 and all((s / "PA.dcm").is_file() and (s / "LL.dcm").is_file() for s in studies)
    answer = predictor.answer(studies[0], "Is there a pleural effusion?")
    assert answer.in_distribution is not None and answer.answer in predictor.answers
    reports = predictor.retrieve(studies[0], k=5)["reports"]
    assert len(reports) == 5 and all("cosine" in r.extra for r in reports)
    # the index carries the study → report scoring, its weights chosen on validation
    assert predictor.scoring is not None and len(predictor.scoring.hub) == len(predictor.index)
    assert predictor.scoring.selection["split"] == "val" and predictor.scoring.selection["grid"]
    assets = json.loads((root / "assets/MANIFEST.json").read_text())
    listed = {e["path"] for e in assets["files"]}
    assert "checkpoints/tiny/model.safetensors" in listed and all(e["licence"] for e in assets["files"])


def test_compare_builds_judges_test_metrics_within_the_tolerance(tmp_path, capsys):
    from training.compare_builds import main as compare_main

    def checkpoint(name: str, closed: float, seconds: float):
        folder = tmp_path / name
        folder.mkdir()
        metrics = {"vqa_test": {"closed": closed, "open": 0.4}, "build_seconds": {"pretrain": seconds}}
        (folder / "manifest.json").write_text(json.dumps({"metrics": metrics}))
        return str(folder)

    shipped = checkpoint("shipped", 0.67, 1500.0)
    assert compare_main([checkpoint("close", 0.675, 10.0), "--against", shipped, "--tolerance", "0.01"]) == 0
    assert compare_main([checkpoint("far", 0.70, 1500.0), "--against", shipped, "--tolerance", "0.01"]) == 1
    assert "vqa_test.closed" in capsys.readouterr().out.splitlines()[-1]
