"""training.evaluate end to end on a small dataset and checkpoints the test trains."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_OVERRIDES

from mvcm_core.checkpoint import save_pretrained
from mvcm_core.factory import create_model
from training.build_data import build_dataset
from training.evaluate import main as evaluate_main
from training.finetune_vqa import CLEAN, finetune


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = build_dataset(root / "data", size=32, source="random", limit=40, renders=1, workers=1, anatomies=1)
    torch.manual_seed(0)
    base = save_pretrained(create_model("mvcm-tiny", TINY_OVERRIDES), root / "base")
    run = finetune({"init": str(base), "data": {"kind": "mvcm-qa", "root": str(data)}, "vqa": {"gca": True},
                    "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "seed": 0}, "out": str(root / "vqa")})
    return data, run / "checkpoint"


def test_vqa_evaluation_writes_metrics_baselines_plots_and_the_protocol(setup, tmp_path):
    data, checkpoint = setup
    out = tmp_path / "vqa.json"
    assert evaluate_main(["--checkpoint", str(checkpoint), "--task", "vqa", "--split", "test", "--data", str(data),
                          "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["protocol"] == CLEAN and result["split"] == "test"
    for convention in ("dataset", "yes_no"):
        assert {"open", "closed", "overall"} <= set(result["vqa"]["conventions"][convention])
    assert {"global_majority", "type_majority"} <= set(result["baselines"])
    assert (tmp_path / "vqa_per_finding.png").is_file() and (tmp_path / "vqa_confusions.png").is_file()
    assert CLEAN in (tmp_path / "vqa.md").read_text()


def test_retrieval_evaluation_reports_both_directions_with_rerank_and_baselines(setup, tmp_path):
    data, checkpoint = setup
    out = tmp_path / "ret.json"
    evaluate_main(["--checkpoint", str(checkpoint), "--task", "retrieval", "--split", "test", "--data", str(data),
                   "--rerank-k", "4", "--out", str(out)])
    result = json.loads(out.read_text())
    for direction in ("i2t", "t2i"):
        assert {"R@1", "R@5", "R@10"} <= set(result["retrieval"][direction]["itm_rerank"]["recall"])
    assert {"R@1", "R@5", "R@10"} <= set(result["retrieval"]["i2t"]["scored"]["recall"])
    selection = result["report_scoring"]["selection"]
    assert selection["split"] == "val" and selection["reference"] == "train studies"
    chosen = [row for row in selection["grid"] if row[2] == max(r[2] for r in selection["grid"])][0]
    assert chosen[:2] == [result["report_scoring"]["hub_weight"], result["report_scoring"]["findings_weight"]]
    assert "scored" in (tmp_path / "ret.md").read_text() and "in-sample" not in (tmp_path / "ret.md").read_text()
    evaluate_main(["--checkpoint", str(checkpoint), "--task", "retrieval", "--split", "val", "--data", str(data),
                   "--rerank-k", "4", "--out", str(tmp_path / "val.json")])
    assert "in-sample" in (tmp_path / "val.md").read_text()  # weights chosen on the split being reported
    assert (tmp_path / "ret_recall.png").is_file()


def test_report_scoring_selection_is_cached_per_weights_and_data(setup, tmp_path, monkeypatch):
    import numpy as np

    import training.evaluate as evaluate

    data, checkpoint = setup
    model = evaluate.load_pretrained(checkpoint)
    cache = tmp_path / evaluate.SCORING_CACHE
    chosen, reference = evaluate.select_report_scoring(model, {"root": str(data)}, cache=cache)
    assert cache.is_file()
    calls = []
    real_embed = evaluate.embed_split
    monkeypatch.setattr(evaluate, "embed_split", lambda *a, **k: calls.append(a[2]) or real_embed(*a, **k))
    again, reference_again = evaluate.select_report_scoring(model, {"root": str(data)}, cache=cache)
    assert calls == []  # same weights, data and neighbours: nothing re-embedded
    assert (again.hub_weight, again.findings_weight) == (chosen.hub_weight, chosen.findings_weight)
    assert np.allclose(again.hub, chosen.hub, atol=1e-5) and np.array_equal(reference_again, reference)
    evaluate.select_report_scoring(model, {"root": str(data)}, neighbours=3, cache=cache)
    assert calls == ["train", "val"]  # another neighbour count is another selection


def test_finetune_ablation_matrix_writes_one_table(setup, tmp_path, monkeypatch):
    from training import ablate_finetune

    data, checkpoint = setup
    base = checkpoint.parents[1] / "base"
    args = ["--init", str(base), "--data", str(data), "--seeds", "0", "1", "--epochs", "1",
            "--only", "multi-view (both)", "lateral only", "ViT adapters (frozen trunk)", "--out", str(tmp_path)]
    ablate_finetune.main(args)
    table = (tmp_path / "ablation.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith(("| variant", "| ---"))]
    assert [row.split("|")[1].strip() for row in rows] == ["multi-view (both)", "lateral only",
                                                           "ViT adapters (frozen trunk)"]
    assert all(row.split("|")[2].strip() == "2" and "±" in row for row in rows)

    def never(config):
        raise AssertionError(f"{config['out']} was finished: --reuse must not train it again")

    monkeypatch.setattr(ablate_finetune, "finetune", never)
    ablate_finetune.main([*args, "--reuse"])  # every row-seed is done: the same table, nothing trained
    assert (tmp_path / "ablation.md").read_text() == table


def test_objective_rows_re_pretrain_with_each_loss_off_then_fine_tune(setup, tmp_path):
    import yaml

    from training.ablate_finetune import main as ablate_main

    data, checkpoint = setup
    pretrain_config = tmp_path / "pretrain.yaml"
    pretrain_config.write_text(yaml.safe_dump({
        "model": "mvcm-tiny", "model_overrides": TINY_OVERRIDES, "data": {"split": "train"},
        "train": {"batch_size": 8, "lr": 1e-3, "warmup_steps": 0, "seed": 0},
        "losses": {"itc": {"weight": 1.0}, "mlm": {"weight": 0.5}, "mim": {"weight": 0.0}}}))
    ablate_main(["--init", str(checkpoint.parents[1] / "base"), "--data", str(data), "--seeds", "0",
                 "--epochs", "1", "--steps-per-epoch", "2", "--pretrain-config", str(pretrain_config),
                 "--pretrain-steps", "2", "--pretrain-set", "train.lr=0.002", "--only", "all", "itc",
                 "--out", str(tmp_path / "out")])
    table = (tmp_path / "out" / "ablation.md").read_text()
    rows = [line.split("|")[1].strip() for line in table.splitlines()
            if line.startswith("| ") and not line.startswith(("| variant", "| ---"))]
    assert rows == ["pretrain: all objectives", "pretrain: no itc"]  # mlm's row filtered, mim is off already
    no_itc = yaml.safe_load((tmp_path / "out" / "pretrain-no-itc" / "config.resolved.yaml").read_text())
    assert no_itc["losses"]["itc"]["weight"] == 0.0 and no_itc["losses"]["mlm"]["weight"] == 0.5
    assert no_itc["train"]["lr"] == 0.002  # --pretrain-set reached the re-pretraining
    assert "1 epoch(s) × 2 steps" in table
    vqa_log = [json.loads(line) for line in (tmp_path / "out" / "objectives-seed0" / "log.jsonl").read_text().splitlines()]
    assert max(record["step"] for record in vqa_log) == 2  # the fine-tuning budget cap held


def test_a_variant_the_model_cannot_take_is_a_row_with_its_reason(monkeypatch, tmp_path):
    from training import ablate_finetune

    def never(*args, **kwargs):
        raise AssertionError("an unsupported variant must not be trained")

    adapters = {"model_overrides.vision": {"trainable": "adapters"}}
    for timm_name in ("resnet18", "vit_tiny_patch16_224"):
        folder = tmp_path / timm_name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"format_version": 1, "model": {"vision": {"timm_name": timm_name}}}))
    assert ablate_finetune.unsupported({"init": str(tmp_path / "vit_tiny_patch16_224")}, adapters) is None
    assert ablate_finetune.unsupported({"init": str(tmp_path / "resnet18")}, {"vqa.views": "frontal"}) is None
    monkeypatch.setattr(ablate_finetune, "run_variant", never)
    row = ablate_finetune.attempt("ViT", {"init": str(tmp_path / "resnet18")}, adapters, [0], tmp_path)
    assert row == "vision adapters need a ViT (this tower: resnet18)"
    scores = [{"overall": 0.5, "closed": 0.6, "open": 0.4, "view-dependent": 0.5, "lateral-view": 0.5,
               "frontal-view": 0.5, "both-views": 0.5}]
    lines = ablate_finetune.table([("multi-view (both)", scores), ("ViT adapters (frozen trunk)", row)]).splitlines()
    assert lines[2].startswith("| multi-view (both) | 1 | 50.0 ± 0.0 | 60.0 ± 0.0")
    assert lines[2].endswith("| 50.0 ± 0.0 | – |")  # a result without depth questions: no depth cell
    assert lines[3] == f"| ViT adapters (frozen trunk) | 0 | n/a: {row} |" + " – |" * (len(ablate_finetune.METRICS) - 1)
