"""ContrastiveLoss, SoftLabelContrastiveLoss, the teachers and the registry (single process)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mvcm_core.losses import (
    LOSS_REGISTRY,
    ContrastiveLoss,
    SoftLabelContrastiveLoss,
    create_loss,
    embedding_teacher_logits,
    findings_teacher_logits,
)


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def hard_itc_reference(a, b, scale, smoothing=0.0):
    logits = scale * a @ b.T
    labels = torch.arange(a.shape[0])
    return (F.cross_entropy(logits, labels, label_smoothing=smoothing)
            + F.cross_entropy(logits.T, labels, label_smoothing=smoothing)) / 2


def test_itc_equals_hand_computed_value_on_2x2():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # logits = 2 * a b^T = [[2, 1.2], [0, 1.6]]
    row0 = -2 + math.log(math.exp(2) + math.exp(1.2))
    row1 = -1.6 + math.log(math.exp(0) + math.exp(1.6))
    col0 = -2 + math.log(math.exp(2) + math.exp(0))
    col1 = -1.6 + math.log(math.exp(1.2) + math.exp(1.6))
    expected = ((row0 + row1) / 2 + (col0 + col1) / 2) / 2
    loss = ContrastiveLoss()(a, b, torch.tensor(2.0))["itc_loss"]
    assert loss.item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_itc_matches_cross_entropy_reference_and_is_symmetric(smoothing):
    a, b, scale = unit(6, 8, seed=1), unit(6, 8, seed=2), torch.tensor(7.0)
    loss = ContrastiveLoss(label_smoothing=smoothing)
    out = loss(a, b, scale)["itc_loss"]
    torch.testing.assert_close(out, hard_itc_reference(a, b, scale, smoothing))
    torch.testing.assert_close(loss(b, a, scale)["itc_loss"], out)


def test_aligned_embeddings_score_lower_than_shuffled():
    a = unit(8, 16, seed=3)
    loss = ContrastiveLoss()
    aligned = loss(a, a, torch.tensor(10.0))["itc_loss"]
    shuffled = loss(a, a[torch.roll(torch.arange(8), 1)], torch.tensor(10.0))["itc_loss"]
    assert aligned < shuffled - 1.0


def test_valid_mask_drops_rows_and_columns_and_gives_them_no_gradient():
    a = unit(5, 8, seed=4).requires_grad_()
    b = unit(5, 8, seed=5).requires_grad_()
    valid = torch.tensor([True, False, True, True, False])
    out = ContrastiveLoss(name="inter_view")(a, b, torch.tensor(5.0), valid=valid)
    assert set(out) == {"inter_view_loss"}
    torch.testing.assert_close(out["inter_view_loss"], hard_itc_reference(a[valid], b[valid], 5.0))
    out["inter_view_loss"].backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    assert a.grad[~valid].abs().sum() == 0 and b.grad[~valid].abs().sum() == 0
    assert a.grad[valid].abs().sum() > 0


def test_no_valid_sample_gives_a_zero_that_backpropagates():
    a = unit(3, 4).requires_grad_()
    scale = torch.tensor(3.0, requires_grad=True)
    out = ContrastiveLoss()(a, a, scale, valid=torch.zeros(3, dtype=torch.bool))["itc_loss"]
    out.backward()
    assert out.item() == 0.0 and a.grad.abs().sum() == 0


def test_duplicate_aware_targets_equal_hand_computed_multi_positive_cross_entropy():
    a, b, scale = unit(3, 4, seed=6), unit(3, 4, seed=7), torch.tensor(3.0)
    groups = torch.tensor([5, 5, 2])  # samples 0 and 1 have the same report text
    out = ContrastiveLoss()(a, b, scale, positive_groups=groups)["itc_loss"]
    targets = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    logits = scale * a @ b.T
    rows = -(targets * F.log_softmax(logits, 1)).sum(1).mean()
    cols = -(targets * F.log_softmax(logits.T, 1)).sum(1).mean()
    assert out.item() == pytest.approx(((rows + cols) / 2).item(), abs=1e-6)


def test_duplicate_aware_targets_do_not_push_duplicates_apart():
    base = unit(4, 8, seed=8)
    near_twin = F.normalize(base[0] + 0.05 * unit(8, seed=9), dim=-1)
    embeddings = torch.cat([base[:1], near_twin[None], base[1:]])  # rows 0 and 1: same report text

    def twin_distance_after_step(groups):
        a = embeddings.clone().requires_grad_()
        b = embeddings.clone().requires_grad_()
        ContrastiveLoss()(a, b, torch.tensor(20.0), positive_groups=groups)["itc_loss"].backward()
        with torch.no_grad():
            a_new = F.normalize(a - 0.5 * a.grad, dim=-1)
        return (a_new[0] - a_new[1]).norm().item()

    before = (embeddings[0] - embeddings[1]).norm().item()
    assert twin_distance_after_step(None) > before  # plain InfoNCE separates the twins
    assert twin_distance_after_step(torch.tensor([0, 0, 1, 2, 3])) < before  # grouped pulls them together


def test_finite_gradients_and_logit_scale_gradient():
    a = unit(4, 6, seed=7).requires_grad_()
    b = unit(4, 6, seed=8).requires_grad_()
    scale = torch.tensor(14.0, requires_grad=True)
    ContrastiveLoss(label_smoothing=0.1)(a, b, scale)["itc_loss"].backward()
    for grad in (a.grad, b.grad, scale.grad):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("loss", [ContrastiveLoss(), SoftLabelContrastiveLoss()])
def test_autocast_bfloat16_computes_in_float32(loss):
    a, b, scale = unit(6, 8, seed=9), unit(6, 8, seed=10), torch.tensor(20.0)
    teacher = {} if isinstance(loss, ContrastiveLoss) else {"teacher_logits": 3 * a @ b.T}
    reference = next(iter(loss(a, b, scale, **teacher).values()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = next(iter(loss(a, b, scale, **teacher).values()))
        from_bf16 = next(iter(loss(a.bfloat16(), b.bfloat16(), scale, **teacher).values()))
    assert under_autocast.dtype == torch.float32 and from_bf16.dtype == torch.float32
    torch.testing.assert_close(under_autocast, reference, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(from_bf16, reference, atol=0.1, rtol=0.05)


def test_soft_label_with_one_hot_teacher_equals_hard_itc():
    a, b, scale = unit(5, 8, seed=11), unit(5, 8, seed=12), torch.tensor(10.0)
    hard = hard_itc_reference(a, b, scale)
    # KL(onehot || p) = CE(onehot, p) - H(onehot) = CE: the constant is the teacher's entropy, 0 here
    no_flex, big_flex = SoftLabelContrastiveLoss(flex_weight=0.0), SoftLabelContrastiveLoss(flex_weight=1e4)
    huge_diagonal = no_flex(a, b, scale, 1e4 * torch.eye(5))["soft_itc_loss"]
    huge_flex = big_flex(a, b, scale, torch.randn(5, 5))["soft_itc_loss"]
    torch.testing.assert_close(huge_diagonal, hard)
    torch.testing.assert_close(huge_flex, hard)


def test_soft_label_hand_case_uniform_teacher():
    a, b, scale = unit(4, 8, seed=13), unit(4, 8, seed=14), torch.tensor(6.0)
    out = SoftLabelContrastiveLoss(flex_weight=0.0)(a, b, scale, torch.zeros(4, 4))["soft_itc_loss"]
    logits = scale * a @ b.T
    # KL(uniform || p) = -log n - mean_j log p_j, per row
    kl_rows = (-math.log(4) - F.log_softmax(logits, 1).mean(1)).mean()
    kl_cols = (-math.log(4) - F.log_softmax(logits.T, 1).mean(1)).mean()
    assert out.item() == pytest.approx(((kl_rows + kl_cols) / 2).item(), abs=1e-5)


def test_soft_label_flex_weight_is_added_to_the_teacher_diagonal():
    a, b, scale = unit(4, 8, seed=15), unit(4, 8, seed=16), torch.tensor(6.0)
    teacher = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    no_flex = SoftLabelContrastiveLoss(flex_weight=0.0)
    with_flex = SoftLabelContrastiveLoss(flex_weight=0.7)(a, b, scale, teacher)["soft_itc_loss"]
    shifted = no_flex(a, b, scale, teacher + 0.7 * torch.eye(4))["soft_itc_loss"]
    torch.testing.assert_close(with_flex, shifted)
    assert not torch.allclose(with_flex, no_flex(a, b, scale, teacher)["soft_itc_loss"])


def test_soft_label_symmetric_for_symmetric_teacher_and_teacher_gets_no_gradient():
    a = unit(5, 8, seed=17).requires_grad_()
    b = unit(5, 8, seed=18).requires_grad_()
    teacher_a = torch.randn(5, 3, requires_grad=True)
    teacher_b = torch.randn(5, 3, requires_grad=True)
    loss = SoftLabelContrastiveLoss(name="soft_inter_view", teacher_scale=4.0)
    out = loss(a, b, torch.tensor(9.0), teacher_a=teacher_a, teacher_b=teacher_b)["soft_inter_view_loss"]
    expected = loss(a, b, torch.tensor(9.0), embedding_teacher_logits(teacher_a, teacher_b, 4.0))
    torch.testing.assert_close(out, expected["soft_inter_view_loss"])
    out.backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    assert teacher_a.grad is None and teacher_b.grad is None
    symmetric = torch.randn(5, 5)
    symmetric = symmetric + symmetric.T
    torch.testing.assert_close(loss(a, b, torch.tensor(9.0), symmetric)["soft_inter_view_loss"],
                               loss(b, a, torch.tensor(9.0), symmetric)["soft_inter_view_loss"])


def test_soft_label_requires_exactly_one_teacher():
    a = unit(3, 4)
    loss = SoftLabelContrastiveLoss()
    with pytest.raises(ValueError):
        loss(a, a, torch.tensor(1.0))
    with pytest.raises(ValueError):
        loss(a, a, torch.tensor(1.0), torch.zeros(3, 3), teacher_labels=torch.ones(3, 2))
    with pytest.raises(ValueError):
        loss(a, a, torch.tensor(1.0), teacher_a=torch.ones(3, 2))


def test_findings_teacher_is_scaled_jaccard_with_normal_rows_consistent():
    labels = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 1, 0]], dtype=torch.float)
    logits = findings_teacher_logits(labels, scale=10.0)
    expected = torch.tensor([
        [1.0, 0.5, 0.0, 0.0, 0.5],
        [0.5, 1.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 1.0, 0.0],  # two normal (no-finding) reports overlap fully
        [0.0, 0.0, 1.0, 1.0, 0.0],
        [0.5, 0.0, 0.0, 0.0, 1.0],
    ]) * 10.0
    torch.testing.assert_close(logits, expected)
    # an explicit "normal" column (index 2) is the same as no label at all
    explicit = torch.tensor([[0, 0, 1], [0, 0, 0], [1, 0, 0]], dtype=torch.float)
    merged = findings_teacher_logits(explicit, scale=1.0, normal_index=2)
    assert merged[0, 1].item() == 1.0 and merged[0, 2].item() == 0.0


def test_soft_label_with_findings_teacher_matches_explicit_logits_and_valid_mask():
    a, b, scale = unit(5, 8, seed=19), unit(5, 8, seed=20), torch.tensor(8.0)
    labels = (torch.rand(5, 6, generator=torch.Generator().manual_seed(1)) > 0.6).float()
    valid = torch.tensor([True, True, False, True, True])
    loss = SoftLabelContrastiveLoss(name="soft_intra_text", teacher_scale=5.0)
    out = loss(a, b, scale, teacher_labels=labels, valid=valid)["soft_intra_text_loss"]
    teacher = findings_teacher_logits(labels[valid], scale=5.0)
    expected = loss(a[valid], b[valid], scale, teacher)["soft_intra_text_loss"]
    torch.testing.assert_close(out, expected)


def test_registry_and_create_loss_name_the_output_keys():
    assert set(LOSS_REGISTRY) == {"itc", "inter_view", "soft_itc", "soft_inter_view", "soft_intra_text",
                                  "token_align", "ot_align", "proto", "mlm", "mim", "itm", "findings", "positions"}
    a = unit(3, 4)
    for name in ("itc", "inter_view"):
        assert set(create_loss(name)(a, a, torch.tensor(1.0))) == {f"{name}_loss"}
    for name in ("soft_itc", "soft_inter_view", "soft_intra_text"):
        assert set(create_loss(name)(a, a, torch.tensor(1.0), torch.eye(3))) == {f"{name}_loss"}
    with pytest.raises(KeyError):
        create_loss("nope")
