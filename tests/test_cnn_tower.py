"""The convolutional image tower (``mvcm-tiny-cnn``, the served model's): cells as patches, positions,
a frozen trunk that keeps its batch-norm statistics, and the served inference paths on top of it."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import TINY_OVERRIDES
from test_inference import ANSWERS, QUESTIONS, _close_answers

from mvcm_core.checkpoint import save_pretrained
from mvcm_core.data.phantom.dataset import random_specs, write_study
from mvcm_core.factory import create_model
from mvcm_core.inference import Predictor
from training.finetune_vqa import build_vqa_model

CNN_OVERRIDES = copy.deepcopy(TINY_OVERRIDES)
CNN_OVERRIDES["vision"] = {"image_size": 32, "timm_kwargs": {"channels": [8, 8, 16, 16], "stem_width": 8,
                                                            "output_stride": 16}}


def test_cnn_cells_are_the_patches_and_carry_their_position():
    model = create_model("mvcm-tiny-cnn", CNN_OVERRIDES).eval()
    encoder = model.vision
    assert not encoder.is_vit and encoder.patch_size == 16 and encoder.num_patches == 4  # 32 px / 16
    images = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        tokens = encoder(images)
        assert tokens.shape == (3, 1 + 4, encoder.width)  # pooled token + 2x2 cells
        moved = encoder.cell_positions.detach().clone()
        encoder.cell_positions.data.add_(1.0)
        assert torch.allclose(encoder(images)[:, 1:], tokens[:, 1:] + 1.0, atol=1e-5)
        encoder.cell_positions.data.copy_(moved)
    with pytest.raises(ValueError, match="ViT"):
        model(_batch(model), mask_ratio=0.5)  # no patches to mask in a CNN


def test_a_frozen_cnn_trunk_keeps_its_batch_norm_statistics_in_train_mode():
    overrides = copy.deepcopy(CNN_OVERRIDES)
    overrides["vision"]["trainable"] = "frozen"
    model = create_model("mvcm-tiny-cnn", overrides).train()
    encoder = model.vision
    assert not any(p.requires_grad for p in encoder.parameters())
    before = {k: v.clone() for k, v in encoder.state_dict().items() if "running" in k}
    model(_batch(model))
    after = {k: v for k, v in encoder.state_dict().items() if "running" in k}
    assert before and all(torch.equal(before[k], after[k]) for k in before)
    trainable = create_model("mvcm-tiny-cnn", CNN_OVERRIDES).train()
    trainable(_batch(trainable))
    moved = [k for k, v in trainable.vision.state_dict().items() if "running_mean" in k and v.abs().sum() > 0]
    assert moved  # a trainable trunk does update them


def test_the_served_paths_agree_on_a_cnn_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_vqa_model("mvcm-tiny-cnn", ANSWERS, True, CNN_OVERRIDES)
    folder = save_pretrained(model.eval(), tmp_path / "checkpoint")
    spec = random_specs(1, seed=3)[0]
    write_study(tmp_path / "studies", spec, size=64)
    study = tmp_path / "studies" / spec.study_id
    eager = Predictor.from_pretrained(folder, optimize=False)
    fast = Predictor(eager.model, eager.folder, eager.index, eager.ood, eager.temperature, precision="fp32")
    for question in QUESTIONS:
        answer = eager.answer(study, question)
        assert set(answer.attention_maps) == {"PA", "LATERAL"}
        assert all(len(grid) == 2 and len(grid[0]) == 2 for grid in answer.attention_maps.values())
        _close_answers(fast.answer(study, question), answer, 2e-4)


def _batch(model):
    from conftest import random_batch

    return random_batch(model.cfg, batch=2)
