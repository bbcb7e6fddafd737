"""The VQA head's region pooling, position evidence and evidence pointer: where a finding is reaches the classifier."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_OVERRIDES

from mvcm_core.config import POSITION_DEPTH_TERMS, POSITION_SIDE_TERMS
from mvcm_core.models.vqa import (
    SLOT_FEATURES,
    VQAHead,
    evidence_slots,
    pointer_targets,
    position_evidence,
    region_weights,
)
from training.finetune_vqa import build_vqa_model, pointer_loss


def test_region_weights_split_each_views_cells_into_a_grid_and_skip_the_prefix():
    weights = region_weights(views=2, prefix=1, grid=4, regions=2)  # 2 views × (1 + 16) tokens
    assert weights.shape == (8, 34) and weights.sum(1).tolist() == [4.0] * 8
    assert weights[:, [0, 17]].sum() == 0  # the pooled / [CLS] tokens are in no region
    assert (weights[0] > 0).nonzero().flatten().tolist() == [1, 2, 5, 6]  # view 0, upper-left 2×2 cells
    assert (weights[7] > 0).nonzero().flatten().tolist() == [28, 29, 32, 33]  # view 1, lower-right
    with pytest.raises(ValueError, match="cannot be split"):
        region_weights(views=1, prefix=1, grid=5, regions=2)


def test_only_the_region_pooled_head_tells_a_finding_on_the_left_from_one_on_the_right():
    torch.manual_seed(0)
    width, grid = 8, 4
    text = torch.randn(1, 3, width)
    left, right = torch.zeros(1, 1 + grid * grid, width), torch.zeros(1, 1 + grid * grid, width)
    finding = torch.randn(width)
    left[0, 1 + 8], right[0, 1 + 11] = finding, finding  # the same cell feature in row 2, column 0 or 3
    for regions, tells in ((None, False), (region_weights(1, 1, grid, 2), True)):
        head = VQAHead(width, 3, heads=2, gca=False, regions=regions)
        same = torch.allclose(head(text, None, left, None), head(text, None, right, None))
        assert same is not tells
    masked = torch.ones(1, 1 + grid * grid, dtype=torch.bool)
    masked[0, 1 + 11] = False  # a masked token counts in no region mean
    head = VQAHead(width, 3, heads=2, gca=False, regions=region_weights(1, 1, grid, 2))
    assert torch.allclose(head(text, None, right, masked), head(text, None, torch.zeros_like(right), masked))


def test_position_evidence_is_zero_and_flagged_where_its_view_is_absent():
    side, depth = torch.full((2, 4), 3.0, requires_grad=True), torch.full((2, 2), -3.0)
    evidence = position_evidence(side, torch.tensor([True, False]), depth, torch.tensor([False, True]))
    assert evidence.shape == (2, 4 + 1 + 2 + 1) and not evidence.requires_grad  # the heads keep their own losses
    assert torch.allclose(evidence[0, :5], torch.tensor([torch.sigmoid(torch.tensor(3.0)).item()] * 4 + [1.0]))
    assert evidence[0, 5:].abs().sum() == 0 and evidence[1, :5].abs().sum() == 0
    assert evidence[1, -1] == 1.0 and evidence[1, 5] == pytest.approx(torch.sigmoid(torch.tensor(-3.0)).item())


def _evidence_batch(model, view_mask):
    questions, studies = 3, 2
    size = model.cfg.preprocess.image_size
    return {"images": torch.randn(studies, 2, 1, size, size), "view_ids": torch.tensor([[0, 1]] * studies),
            "view_mask": torch.tensor(view_mask), "study_index": torch.tensor([0, 1, 1]),
            "input_ids": torch.randint(5, 100, (questions, 6)), "attention_mask": torch.ones(questions, 6)}


def test_the_depth_evidence_reaches_an_answer_only_when_the_lateral_is_there():
    overrides = {**TINY_OVERRIDES, "heads": {**TINY_OVERRIDES["heads"], "position_heads": True, "vqa_evidence": True}}
    torch.manual_seed(0)
    model = build_vqa_model("mvcm-tiny", ["no", "yes", "anterior", "posterior"], True, overrides).eval()
    batch = _evidence_batch(model, [[True, True], [True, False]])  # study 1 has no lateral
    with torch.no_grad():
        before = model.vqa_logits(batch)
        model.depth_head.score.bias.add_(5.0)  # the lateral's depth head says something else
        after = model.vqa_logits(batch)
    assert before.shape == (3, 4)
    assert not torch.allclose(before[0], after[0])  # question 0 is about study 0, which has its lateral
    assert torch.allclose(before[1:], after[1:])  # questions 1-2 read study 1: no lateral, no depth evidence
    logits = model.vqa_logits(_evidence_batch(model, [[True, True], [True, True]]))
    logits.sum().backward()
    assert model.vqa_head.evidence[0].weight.grad.abs().sum() > 0
    assert model.depth_head.score.weight.grad is None  # detached: VQA never moves the position heads
    with pytest.raises(ValueError, match="position_heads"):
        build_vqa_model("mvcm-tiny", ["no"], True, {**TINY_OVERRIDES, "heads": {"vqa_evidence": True}})


def _study_evidence(side_logits: torch.Tensor, depth_logits: torch.Tensor) -> torch.Tensor:
    return position_evidence(side_logits[None], torch.tensor([True]), depth_logits[None], torch.tensor([True]))


def test_evidence_slots_hold_each_findings_own_side_and_depth():
    sides, depths = len(POSITION_SIDE_TERMS), len(POSITION_DEPTH_TERMS)
    side_logits, depth_logits = torch.linspace(-2, 2, 2 * sides), torch.linspace(-1, 1, 2 * depths)
    evidence = _study_evidence(side_logits, depth_logits)  # [1, E]
    slots = (evidence @ evidence_slots()).view(sides + 1, SLOT_FEATURES)  # [1, (K+1)*6] -> [K + 1, 6]
    opacity, effusion = POSITION_SIDE_TERMS.index("opacity"), POSITION_SIDE_TERMS.index("pleural effusion")
    depth = 2 * POSITION_DEPTH_TERMS.index("opacity")
    expected = torch.cat([torch.sigmoid(side_logits[2 * opacity: 2 * opacity + 2]), torch.ones(1),
                          torch.sigmoid(depth_logits[depth: depth + 2]), torch.ones(1)])
    assert torch.allclose(slots[opacity], expected)
    assert slots[effusion, 3:].abs().sum() == 0 and slots[effusion, 2] == 1.0  # the depth head does not score it
    assert slots[-1].abs().sum() == 0  # "none": the question names no finding the heads locate
    assert pointer_targets(["opacity", "cardiomegaly", None]).tolist() == [opacity, sides, -100]


def test_the_pointer_reads_the_finding_the_question_names():
    torch.manual_seed(0)
    width, sides, depths = 8, len(POSITION_SIDE_TERMS), len(POSITION_DEPTH_TERMS)
    head = VQAHead(width, 4, heads=2, gca=False, evidence_dim=2 * (sides + depths) + 2, pointer=True).eval()
    text, image = torch.randn(1, 3, width), torch.randn(1, 5, width)
    with torch.no_grad():
        head.evidence[0].weight.zero_()  # only the pointed read carries the evidence
        head.pointer.weight.zero_()

    def logits(named: str, depth_logits: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            head.pointer.bias.copy_(torch.full((sides + 1,), -30.0))
            head.pointer.bias[POSITION_SIDE_TERMS.index(named)] = 30.0  # the question names this finding
            return head(text, None, image, None, evidence=_study_evidence(torch.zeros(2 * sides), depth_logits))

    opacity_behind, nodule_behind = torch.tensor([-3.0, 3.0, 0, 0, 0, 0]), torch.tensor([0, 0, -3.0, 3.0, 0, 0])
    neutral = torch.zeros(2 * depths)
    assert not torch.allclose(logits("opacity", neutral), logits("opacity", opacity_behind))
    assert torch.allclose(logits("opacity", neutral), logits("opacity", nodule_behind))  # another finding's depth
    assert not torch.allclose(logits("nodule", neutral), logits("nodule", nodule_behind))
    answers, pointed = head(text, None, image, None, evidence=_study_evidence(torch.zeros(2 * sides), neutral),
                            return_pointer=True)
    assert answers.shape == (1, 4) and pointed.shape == (1, sides + 1)
    with pytest.raises(ValueError, match="vqa_evidence"):
        VQAHead(width, 4, heads=2, gca=False, pointer=True)


def test_the_pointer_loss_trains_the_pointer_and_skips_unknown_findings():
    logits = torch.zeros(3, len(POSITION_SIDE_TERMS) + 1, requires_grad=True)
    loss = pointer_loss(logits, ["nodule", None, "cardiomegaly"])
    assert loss.item() == pytest.approx(torch.log(torch.tensor(9.0)).item())  # uniform over 9 slots, 2 questions
    loss.backward()
    assert logits.grad[1].abs().sum() == 0 and logits.grad[0].abs().sum() > 0
    assert pointer_loss(logits, [None, None, None]).item() == 0.0
