"""TokenAlignLoss (MGCA bidirectional token loss) and OTAlignLoss (word-patch optimal transport)."""

from __future__ import annotations

import ot
import pytest
import torch
import torch.nn.functional as F

from mvcm_core.losses import (
    OTAlignLoss,
    TokenAlignLoss,
    clipped_token_weights,
    emd_plan,
    ipot_plan,
    sinkhorn_plan,
)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def reference_direction(queries, keys, query_weights, tau):
    """One sample, one direction, straight from the MGCA formula with a Python loop (no masks)."""
    q, k = F.normalize(queries, dim=-1), F.normalize(keys, dim=-1)
    contexts = torch.stack([F.normalize((F.softmax(q[i] @ k.T / tau, 0)[:, None] * k).sum(0), dim=0)
                            for i in range(len(q))])
    similarity = q @ contexts.T / tau
    labels = torch.arange(len(q))
    rows = F.cross_entropy(similarity, labels, reduction="none")
    cols = F.cross_entropy(similarity.T, labels, reduction="none")
    return (((rows + cols) / 2) * query_weights).sum()


def reference_token_loss(words, patches, word_w, patch_w, tau=0.1):
    word_loss = reference_direction(words, patches, word_w, tau)
    return word_loss + reference_direction(patches, words, patch_w, tau)


def test_clipped_token_weights_hand_case():
    weights = torch.tensor([[0.0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 99]])
    mask = torch.tensor([[True] * 11 + [False]])
    clipped = clipped_token_weights(weights, mask)
    raw = torch.tensor([1.0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9])  # q10 = 1, q90 = 9 over the 11 real values
    torch.testing.assert_close(clipped[0, :11], raw / raw.sum())
    assert clipped[0, 11] == 0
    uniform = clipped_token_weights(None, torch.tensor([[True, True, False, True]]))
    torch.testing.assert_close(uniform, torch.tensor([[1 / 3, 1 / 3, 0, 1 / 3]]))
    assert clipped_token_weights(weights, torch.zeros_like(mask)).abs().sum() == 0  # no real token: all 0


def test_token_align_matches_a_per_sample_reference_of_the_formula():
    words, patches = randn(3, 5, 8, seed=1), randn(3, 6, 8, seed=2)
    word_w, patch_w = randn(3, 5, seed=3).abs(), randn(3, 6, seed=4).abs()
    out = TokenAlignLoss()(words, torch.ones(3, 5, dtype=torch.bool), patches, None, word_w, patch_w)
    expected = torch.stack([
        reference_token_loss(words[i], patches[i],
                             clipped_token_weights(word_w[i:i + 1], torch.ones(1, 5, dtype=torch.bool))[0],
                             clipped_token_weights(patch_w[i:i + 1], torch.ones(1, 6, dtype=torch.bool))[0])
        for i in range(3)]).mean()
    torch.testing.assert_close(out["token_align_loss"], expected)
    parts = out["token_align_word"] + out["token_align_patch"]
    torch.testing.assert_close(parts, out["token_align_loss"].detach())


def test_token_align_ignores_padding_words_and_padding_patches():
    words, patches = randn(2, 4, 8, seed=5), randn(2, 3, 8, seed=6)
    base = TokenAlignLoss()(words, torch.ones(2, 4, dtype=torch.bool), patches)["token_align_loss"]
    padded_words = torch.cat([words, 50 * randn(2, 3, 8, seed=7)], dim=1)
    padded_patches = torch.cat([patches, 50 * randn(2, 2, 8, seed=8)], dim=1)
    word_mask = torch.tensor([[True] * 4 + [False] * 3] * 2)
    patch_mask = torch.tensor([[True] * 3 + [False] * 2] * 2)
    real_weights = torch.rand(2, 7, generator=torch.Generator().manual_seed(0)) * word_mask
    garbage_on_padding = real_weights + 100.0 * ~word_mask
    weighted = [TokenAlignLoss()(padded_words, word_mask, padded_patches, patch_mask, word_weights=w)
                ["token_align_loss"] for w in (real_weights, garbage_on_padding)]
    uniform_given = TokenAlignLoss()(padded_words, word_mask, padded_patches, patch_mask,
                                     word_weights=torch.ones(2, 7))["token_align_loss"]
    torch.testing.assert_close(uniform_given, base)
    torch.testing.assert_close(weighted[0], weighted[1])
    assert not torch.allclose(weighted[0], base)  # the weights do matter


def test_token_align_lower_when_patches_carry_the_words():
    words = randn(2, 6, 16, seed=9)
    matched = TokenAlignLoss()(words, torch.ones(2, 6, dtype=torch.bool), words.flip(1))["token_align_loss"]
    unrelated = TokenAlignLoss()(words, torch.ones(2, 6, dtype=torch.bool), randn(2, 6, 16, seed=10))
    unrelated = unrelated["token_align_loss"]
    assert matched < unrelated


def test_token_align_single_token_samples_and_empty_samples():
    single = TokenAlignLoss()(randn(2, 1, 4), torch.ones(2, 1, dtype=torch.bool), randn(2, 1, 4, seed=1))
    assert single["token_align_loss"].item() == pytest.approx(0.0, abs=1e-6)  # a 1x1 CE is 0
    words = randn(2, 3, 4, seed=2).requires_grad_()
    empty = TokenAlignLoss()(words, torch.zeros(2, 3, dtype=torch.bool), randn(2, 2, 4))["token_align_loss"]
    empty.backward()
    assert empty.item() == 0.0 and torch.isfinite(words.grad).all()


def test_token_align_finite_gradients_and_bfloat16_autocast():
    words = randn(2, 5, 8, seed=11).requires_grad_()
    patches = randn(2, 7, 8, seed=12).requires_grad_()
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    out = TokenAlignLoss()(words, mask, patches)["token_align_loss"]
    out.backward()
    assert torch.isfinite(words.grad).all() and torch.isfinite(patches.grad).all()
    assert words.grad[0, 3:].abs().sum() == 0 and words.grad[0, :3].abs().sum() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = TokenAlignLoss()(words, mask, patches)["token_align_loss"]
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, out, atol=1e-6, rtol=1e-6)


def random_masks(batch, length, seed):
    lengths = torch.randint(2, length + 1, (batch,), generator=torch.Generator().manual_seed(seed))
    return torch.arange(length)[None] < lengths[:, None]


def exact_costs(cost, row_mask, col_mask):
    values = []
    for c, r, k in zip(cost, row_mask, col_mask):
        sub = c[r][:, k].double().numpy()
        values.append(ot.emd2(torch.full((int(r.sum()),), 1 / r.sum()).double().numpy(),
                              torch.full((int(k.sum()),), 1 / k.sum()).double().numpy(), sub))
    return torch.tensor(values, dtype=torch.float32)


def test_ipot_plan_approaches_exact_ot_and_has_the_right_marginals():
    text, image = F.normalize(randn(4, 6, 8, seed=13), dim=-1), F.normalize(randn(4, 7, 8, seed=14), dim=-1)
    text_mask, image_mask = random_masks(4, 6, seed=1), random_masks(4, 7, seed=2)
    cost = 1 - text @ image.transpose(1, 2)
    plan = ipot_plan(cost, text_mask, image_mask, beta=0.5, iterations=200)
    exact = exact_costs(cost, text_mask, image_mask)
    torch.testing.assert_close((cost * plan).sum((1, 2)), exact, atol=2e-3, rtol=0)
    rows, cols = plan.sum(2), plan.sum(1)
    torch.testing.assert_close(rows, text_mask / text_mask.sum(1, keepdim=True), atol=1e-5, rtol=0)
    torch.testing.assert_close(cols, image_mask / image_mask.sum(1, keepdim=True), atol=1e-5, rtol=0)
    assert plan[~(text_mask[:, :, None] & image_mask[:, None, :])].abs().sum() == 0
    default = ipot_plan(cost, text_mask, image_mask)  # AMiF's 50 iterations: close to exact already
    torch.testing.assert_close((cost * default).sum((1, 2)), exact_costs(cost, text_mask, image_mask),
                               atol=2e-2, rtol=0)


def test_sinkhorn_and_emd_backends_agree_with_pot():
    text, image = F.normalize(randn(3, 5, 8, seed=15), dim=-1), F.normalize(randn(3, 4, 8, seed=16), dim=-1)
    text_mask, image_mask = random_masks(3, 5, seed=3), random_masks(3, 4, seed=4)
    cost = 1 - text @ image.transpose(1, 2)
    exact = exact_costs(cost, text_mask, image_mask)
    torch.testing.assert_close((cost * emd_plan(cost, text_mask, image_mask)).sum((1, 2)), exact)
    entropic = sinkhorn_plan(cost, text_mask, image_mask, epsilon=0.01, iterations=500)
    torch.testing.assert_close((cost * entropic).sum((1, 2)), exact, atol=2e-2, rtol=0)
    for backend in ("ipot", "sinkhorn", "emd"):
        loss = OTAlignLoss(backend=backend)(text, text_mask, image, image_mask)["ot_align_loss"]
        assert loss.item() == pytest.approx(exact.mean().item(), abs=5e-2)
    with pytest.raises(ValueError):
        OTAlignLoss(backend="nope")


def test_ot_loss_is_zero_when_text_tokens_equal_image_tokens_one_to_one():
    text = randn(3, 5, 16, seed=17)
    permuted = text[:, torch.tensor([3, 0, 4, 1, 2])]
    out = OTAlignLoss()(text, torch.ones(3, 5, dtype=torch.bool), permuted)["ot_align_loss"]
    assert out.item() == pytest.approx(0.0, abs=1e-5)
    shuffled = OTAlignLoss()(text, torch.ones(3, 5, dtype=torch.bool), permuted.roll(1, dims=0))
    shuffled = shuffled["ot_align_loss"]
    assert shuffled > 0.3


def test_ot_loss_ignores_padding_and_is_per_sample():
    text, image = randn(2, 4, 8, seed=18), randn(2, 3, 8, seed=19)
    base = OTAlignLoss()(text, torch.ones(2, 4, dtype=torch.bool), image)["ot_align_loss"]
    text_mask = torch.tensor([[1] * 4 + [0] * 2] * 2).bool()
    image_mask = torch.tensor([[1] * 3 + [0] * 3] * 2).bool()
    padded = OTAlignLoss()(torch.cat([text, randn(2, 2, 8, seed=20)], 1), text_mask,
                           torch.cat([image, randn(2, 3, 8, seed=21)], 1), image_mask)
    torch.testing.assert_close(padded["ot_align_loss"], base)
    per_sample = torch.stack([OTAlignLoss()(text[i:i + 1], torch.ones(1, 4, dtype=torch.bool), image[i:i + 1])
                              ["ot_align_loss"] for i in range(2)]).mean()
    torch.testing.assert_close(per_sample, base)


def test_no_gradient_flows_through_the_transport_plan():
    text = randn(2, 4, 8, seed=22).requires_grad_()
    image = randn(2, 5, 8, seed=23).requires_grad_()
    mask = torch.ones(2, 4, dtype=torch.bool)
    loss = OTAlignLoss()
    out = loss(text, mask, image)["ot_align_loss"]
    out.backward()
    cost = 1 - F.normalize(text, dim=-1) @ F.normalize(image, dim=-1).transpose(1, 2)
    plan = loss.plan(cost, mask, torch.ones(2, 5, dtype=torch.bool))
    assert not plan.requires_grad and plan.grad_fn is None
    # the gradient is exactly that of <C, T> with T held constant
    text_grad, image_grad = torch.autograd.grad((cost * plan).sum((1, 2)).mean(), (text, image))
    torch.testing.assert_close(text.grad, text_grad)
    torch.testing.assert_close(image.grad, image_grad)
    assert torch.isfinite(text.grad).all() and text.grad.abs().sum() > 0


def test_ot_loss_bfloat16_autocast_and_empty_batch():
    text, image = randn(2, 4, 8, seed=24), randn(2, 3, 8, seed=25)
    mask = torch.ones(2, 4, dtype=torch.bool)
    reference = OTAlignLoss()(text, mask, image)["ot_align_loss"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = OTAlignLoss()(text, mask, image)["ot_align_loss"]
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, reference, atol=1e-6, rtol=1e-6)
    empty = OTAlignLoss()(text.requires_grad_(), torch.zeros_like(mask), image)["ot_align_loss"]
    empty.backward()
    assert empty.item() == 0.0 and torch.isfinite(text.grad).all()
