"""MLMLoss + mask_tokens, MIMLoss + patchify / random_patch_mask."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mvcm_core.losses import MIMLoss, MLMLoss, mask_tokens, patchify, random_patch_mask, unpatchify

MASK_ID, VOCAB = 103, 1000


def token_batch(batch=64, length=40):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(200, VOCAB, (batch, length), generator=gen)
    lengths = torch.randint(5, length + 1, (batch,), generator=gen)
    attention = (torch.arange(length)[None] < lengths[:, None]).long()
    special = torch.zeros_like(attention, dtype=torch.bool)
    special[:, 0] = True  # [CLS]
    special[torch.arange(batch), lengths - 1] = True  # [SEP]
    return ids * attention, attention, special


def test_mask_tokens_never_touches_padding_or_special_tokens_and_follows_80_10_10():
    ids, attention, special = token_batch()
    gen = torch.Generator().manual_seed(1)
    masked, labels = mask_tokens(ids, attention, special, MASK_ID, VOCAB, generator=gen)
    picked = labels != -100
    forbidden = ~attention.bool() | special
    assert not (picked & forbidden).any()
    assert torch.equal(masked[forbidden], ids[forbidden])
    assert torch.equal(labels[picked], ids[picked])
    assert torch.equal(masked[~picked], ids[~picked])
    rate = picked.sum() / (~forbidden).sum()
    assert 0.12 < rate < 0.18
    to_mask = (masked == MASK_ID) & picked
    unchanged = (masked == ids) & picked
    random = picked & ~to_mask & ~unchanged
    n = picked.sum().float()
    assert 0.74 < to_mask.sum() / n < 0.86
    assert 0.05 < random.sum() / n < 0.15 and 0.05 < unchanged.sum() / n < 0.15


def test_mask_tokens_is_reproducible_and_alta_variant_always_masks():
    ids, attention, special = token_batch(8, 20)
    first = mask_tokens(ids, attention, special, MASK_ID, VOCAB, generator=torch.Generator().manual_seed(3))
    second = mask_tokens(ids, attention, special, MASK_ID, VOCAB, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    masked, labels = mask_tokens(ids, attention, special, MASK_ID, VOCAB, probability=0.5, mask_fraction=1.0,
                                 random_fraction=0.0, generator=torch.Generator().manual_seed(4))
    assert (masked[labels != -100] == MASK_ID).all()


def test_mlm_loss_scores_only_labelled_positions():
    logits = torch.randn(2, 4, 10, generator=torch.Generator().manual_seed(5))
    labels = torch.tensor([[-100, 3, -100, 7], [1, -100, -100, -100]])
    out = MLMLoss()(logits, labels)
    expected = torch.stack([F.cross_entropy(logits[0, 1], torch.tensor(3)),
                            F.cross_entropy(logits[0, 3], torch.tensor(7)),
                            F.cross_entropy(logits[1, 0], torch.tensor(1))]).mean()
    torch.testing.assert_close(out["mlm_loss"], expected)
    scrambled = logits.clone()
    scrambled[labels == -100] = 100 * torch.randn_like(scrambled[labels == -100])
    torch.testing.assert_close(MLMLoss()(scrambled, labels)["mlm_loss"], expected)
    assert 0.0 <= out["mlm_acc"].item() <= 1.0


def test_mlm_loss_without_masked_tokens_is_a_backpropagating_zero():
    logits = torch.randn(2, 3, 5, requires_grad=True)
    out = MLMLoss()(logits, torch.full((2, 3), -100))
    out["mlm_loss"].backward()
    assert out["mlm_loss"].item() == 0.0 and logits.grad.abs().sum() == 0


def test_mlm_loss_under_bfloat16_autocast():
    logits, labels = torch.randn(2, 3, 5), torch.tensor([[1, -100, 2], [0, 4, -100]])
    reference = MLMLoss()(logits, labels)["mlm_loss"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = MLMLoss()(logits.bfloat16(), labels)["mlm_loss"]
    assert auto.dtype == torch.float32 and torch.isfinite(auto)
    torch.testing.assert_close(auto, reference, atol=0.05, rtol=0.05)


def test_patchify_layout_and_round_trip():
    images = torch.arange(2 * 3 * 4 * 6, dtype=torch.float).reshape(2, 3, 4, 6)
    patches = patchify(images, 2)
    assert patches.shape == (2, 6, 2 * 2 * 3)
    # patch 1 = rows 0-1, columns 2-3; values ordered (row, column, channel)
    expected = torch.stack([images[0, :, r, c] for r in (0, 1) for c in (2, 3)]).flatten()
    torch.testing.assert_close(patches[0, 1], expected)
    torch.testing.assert_close(unpatchify(patches, 2, 4, 6), images)
    with pytest.raises(ValueError):
        patchify(images, 5)


def test_random_patch_mask_counts_and_indices():
    mask, ids_keep, ids_restore = random_patch_mask(3, 16, 0.75, generator=torch.Generator().manual_seed(6))
    assert mask.shape == (3, 16) and ids_keep.shape == (3, 4)
    assert torch.equal(mask.sum(1), torch.full((3,), 12.0))
    assert (mask.gather(1, ids_keep) == 0).all()
    ids_shuffle = ids_restore.argsort(1)
    assert torch.equal(ids_shuffle.gather(1, ids_restore), torch.arange(16).expand(3, 16))
    again = random_patch_mask(3, 16, 0.75, generator=torch.Generator().manual_seed(6))
    assert torch.equal(again[0], mask)


def test_mim_loss_ignores_visible_patches_and_normalises_targets():
    gen = torch.Generator().manual_seed(7)
    pred, target = torch.randn(2, 4, 12, generator=gen), 5 + 3 * torch.randn(2, 4, 12, generator=gen)
    mask = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]])
    out = MIMLoss()(pred, target, mask)["mim_loss"]
    normalised = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    expected = ((pred - normalised) ** 2).mean(-1)[mask.bool()].mean()
    torch.testing.assert_close(out, expected)
    changed = pred.clone()
    changed[~mask.bool()] += 100.0
    torch.testing.assert_close(MIMLoss()(changed, target, mask)["mim_loss"], out)
    raw = MIMLoss(norm_pix=False)(pred, target, mask)["mim_loss"]
    torch.testing.assert_close(raw, ((pred - target) ** 2).mean(-1)[mask.bool()].mean())


def test_mim_loss_gradients_and_empty_mask():
    pred = torch.randn(2, 4, 12, requires_grad=True)
    mask = torch.tensor([[1.0, 0, 0, 1], [0, 0, 0, 0]])
    MIMLoss()(pred, torch.randn(2, 4, 12), mask)["mim_loss"].backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[~mask.bool()].abs().sum() == 0
    pred.grad = None
    zero = MIMLoss()(pred, torch.randn(2, 4, 12), torch.zeros(2, 4))["mim_loss"]
    zero.backward()
    assert zero.item() == 0.0 and pred.grad.abs().sum() == 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert MIMLoss()(pred, torch.randn(2, 4, 12), mask)["mim_loss"].dtype == torch.float32
