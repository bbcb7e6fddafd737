"""VQA fine-tuning end to end: every public-dataset reader's fixture, and our multi-view studies."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_OVERRIDES

from mvcm_core.checkpoint import load_pretrained, save_pretrained
from mvcm_core.factory import create_model
from mvcm_core.models.vqa import answer_prior_words, pointer_targets
from training.finetune_vqa import CLEAN, LITERATURE, answer_loss, finetune


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return save_pretrained(create_model("mvcm-tiny", TINY_OVERRIDES), tmp_path_factory.mktemp("ck") / "tiny")


def config(init, kind, root, out, **vqa):
    return {"init": str(init), "data": {"kind": kind, "root": str(root)}, "vqa": {"gca": True, **vqa},
            "train": {"epochs": 2, "batch_size": 8, "lr": 1e-3, "warmup_steps": 1, "seed": 0}, "out": str(out)}


def make_fixture(name, root):
    import test_readers
    import test_readers_vqa

    makers = {"vqa-rad": test_readers.make_vqa_rad, "slake": test_readers.make_slake,
              "pathvqa": test_readers_vqa.make_pathvqa, "vqa-med-2019": test_readers_vqa.make_vqa_med_2019}
    return makers[name](root)


@pytest.mark.parametrize("dataset", ["vqa-rad", "slake", "pathvqa", "vqa-med-2019"])
def test_each_public_dataset_reader_feeds_finetuning(dataset, tiny_checkpoint, tmp_path):
    root = make_fixture(dataset, tmp_path / "data")
    run = finetune(config(tiny_checkpoint, dataset, root, tmp_path / "run"))
    model = load_pretrained(run / "checkpoint")
    metrics = model.manifest["metrics"]["vqa_finetune"]
    assert metrics["selection"] == CLEAN and metrics["selection_split"] == "val"
    assert model.vqa_head is not None and len(model.cfg.heads.vqa_answers) == metrics["answers"] >= 1
    assert [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_multi_view_studies_gca_off_single_view_and_literature_protocol(tiny_checkpoint, tmp_path):
    from training.build_data import build_dataset

    data = build_dataset(tmp_path / "data", size=32, source="random", limit=30, renders=1, workers=1, anatomies=1)
    qa = json.loads((data / "qa.json").read_text())
    train_answers = {q["answer"] for q in qa if q["split"] == "train"}
    run = finetune(config(tiny_checkpoint, "mvcm-qa", data, tmp_path / "a", gca=False, views="lateral"))
    model = load_pretrained(run / "checkpoint")
    assert set(model.cfg.heads.vqa_answers) == train_answers  # vocabulary from train only
    assert model.vqa_head.gca is None and model.manifest["metrics"]["vqa_finetune"]["views"] == "lateral"
    leaky = config(tiny_checkpoint, "mvcm-qa", data, tmp_path / "b", vocabulary="train+test",
                   loss_weights={"laterality": 3.0})
    leaky["selection"] = {"select_on_test": True}
    model = load_pretrained(finetune(leaky) / "checkpoint")
    assert set(model.cfg.heads.vqa_answers) >= train_answers
    assert model.manifest["metrics"]["vqa_finetune"]["selection"] == LITERATURE
    assert model.manifest["metrics"]["vqa_finetune"]["loss_weights"] == {"laterality": 3.0}


def test_answer_loss_weights_questions_by_content_type():
    torch.manual_seed(0)
    logits, targets = torch.randn(4, 5), torch.tensor([0, 3, -100, 2])
    kinds = ["presence", "laterality", "laterality", "presence"]
    plain = torch.nn.functional.cross_entropy(logits, targets, ignore_index=-100)
    assert torch.equal(answer_loss(logits, targets, kinds, None), plain)
    assert torch.allclose(answer_loss(logits, targets, kinds, {"laterality": 1.0}), plain)
    each = torch.nn.functional.cross_entropy(logits, targets, ignore_index=-100, reduction="none")
    expected = (each[0] + 4 * each[1] + each[3]) / 6  # the out-of-vocabulary question weighs nothing
    assert torch.allclose(answer_loss(logits, targets, kinds, {"laterality": 4.0}), expected)


def test_answer_prior_keeps_words_that_are_substrings_of_earlier_words():
    # AMiF's public code dropped "no" because "nodule" came first (substring test)
    assert answer_prior_words(["nodule", "no", "left lower lobe", "left"]) == ["nodule", "no", "left", "lower", "lobe"]


def test_fusion_positions_start_at_zero_on_a_pretrained_init_and_train(tiny_checkpoint):
    from training.finetune_vqa import build_vqa_model

    plain = build_vqa_model(str(tiny_checkpoint), ["no", "yes"], True, TINY_OVERRIDES)
    placed = build_vqa_model(str(tiny_checkpoint), ["no", "yes"], True,
                             {**TINY_OVERRIDES, "fusion": {**TINY_OVERRIDES["fusion"], "image_positions": True}})
    assert plain.fusion_positions is None and placed.fusion_positions.requires_grad
    assert placed.fusion_positions.shape[2] == placed.vision.num_prefix_tokens + placed.vision.num_patches
    assert not placed.fusion_positions.any()  # zeros: the loaded model starts where the pretrained one was
    images = torch.randn(2, 2, 1, 32, 32)
    view_ids, view_mask = torch.tensor([[1, 2], [1, 2]]), torch.ones(2, 2, dtype=torch.bool)
    placed.load_state_dict(plain.state_dict(), strict=False)  # the same weights (the VQA heads differ in init)
    before = placed.encode_study(images, view_ids, view_mask)["image_tokens"]
    assert torch.equal(before, plain.encode_study(images, view_ids, view_mask)["image_tokens"])
    with torch.no_grad():
        placed.fusion_positions.normal_()
    after = placed.encode_study(images, view_ids, view_mask)["image_tokens"]
    assert not torch.allclose(before, after)  # the positions reach the fusion's image tokens


def test_the_evidence_pointer_learns_which_finding_a_question_names(tmp_path):
    from training.build_data import build_dataset

    torch.manual_seed(0)
    located = {**TINY_OVERRIDES, "heads": {**TINY_OVERRIDES["heads"], "position_heads": True}}
    init = save_pretrained(create_model("mvcm-tiny", located), tmp_path / "located")
    data = build_dataset(tmp_path / "data", size=32, source="random", limit=40, renders=1, workers=1, anatomies=1)
    run_config = config(init, "mvcm-qa", data, tmp_path / "run", gca=False)
    run_config["model_overrides"] = {"heads": {"vqa_evidence": True, "vqa_evidence_pointer": True},
                                     "text": {"trainable": "full"}}  # a random text tower: let its words learn
    run_config["train"].update(epochs=6, lr=3e-3)
    run = finetune(run_config)
    steps = [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "pointer_loss" in r]
    targets = pointer_targets([q.get("term") for q in json.loads((data / "qa.json").read_text()) if q["split"] == "train"])
    shares = torch.bincount(targets[targets >= 0]).float() / int((targets >= 0).sum())
    blind = float(-(shares[shares > 0] * shares[shares > 0].log()).sum())  # the best loss without reading the question
    last = sum(r["pointer_loss"] for r in steps[-20:]) / 20
    assert len(steps) >= 60 and last < 0.6 * blind, (last, blind)  # which finding is named is in the question's words
    model = load_pretrained(run / "checkpoint")
    assert model.vqa_head.pointer is not None and model.cfg.heads.vqa_evidence_pointer
