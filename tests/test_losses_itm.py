"""sample_hard_negatives and ITMLoss, including the two bugs of the public code they avoid."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mvcm_core.losses import ITMLoss, sample_hard_negatives


def draws(similarity, false_negatives=None, n=2000, temperature=1.0, seed=0):
    """Sample ``n`` times with one fixed generator: ``[n, B]`` indices and the last fallback mask."""
    gen = torch.Generator().manual_seed(seed)
    out = [sample_hard_negatives(similarity, false_negatives, temperature, gen) for _ in range(n)]
    return torch.stack([o[0] for o in out]), out[-1][1]


def test_never_samples_self_or_a_false_negative():
    gen = torch.Generator().manual_seed(1)
    similarity = torch.randn(6, 6, generator=gen)
    false_negatives = torch.rand(6, 6, generator=gen) < 0.4
    false_negatives[0, 1:] = True
    false_negatives[0, 3] = False  # row 0: column 3 is the only allowed negative
    samples, fallback = draws(similarity, false_negatives, n=500)
    rows = torch.arange(6).expand_as(samples)
    assert not (samples == rows).any()
    assert not false_negatives[rows, samples].any()
    assert (samples[:, 0] == 3).all()  # the real column, not a shifted one
    assert not fallback.any()


def test_prefers_higher_similarity_in_proportion_to_softmax():
    similarity = torch.tensor([[9.0, 2.0, 0.0, -1.0], [0.0, 9.0, 0.0, 0.0], [0.0, 0.0, 9.0, 0.0],
                               [0.0, 0.0, 0.0, 9.0]])
    samples, _ = draws(similarity, n=4000)
    counts = torch.bincount(samples[:, 0], minlength=4).float() / 4000
    expected = F.softmax(torch.tensor([2.0, 0.0, -1.0]), dim=0)  # self (9.0) excluded
    torch.testing.assert_close(counts[1:], expected, atol=0.03, rtol=0)
    assert counts[0] == 0
    colder, _ = draws(similarity, n=2000, temperature=0.25)
    assert (colder[:, 0] == 1).float().mean() > counts[1] + 0.1  # lower temperature = harder negatives


def test_works_with_all_negative_similarities():
    similarity = -torch.rand(5, 5, generator=torch.Generator().manual_seed(2)) - 0.5
    samples, fallback = draws(similarity, n=200)
    assert not (samples == torch.arange(5)).any() and not fallback.any()


def test_fallback_when_every_candidate_is_a_false_negative():
    similarity = torch.tensor([[1.0, 0.2, 0.7], [0.1, 1.0, 0.3], [0.5, 0.6, 1.0]])
    false_negatives = torch.tensor([[False, True, True], [False, False, False], [False, False, False]])
    gen = torch.Generator().manual_seed(3)
    negatives, fallback = sample_hard_negatives(similarity, false_negatives, generator=gen)
    assert fallback.tolist() == [True, False, False]
    assert negatives[0].item() == 2  # hardest non-self column
    with pytest.raises(ValueError):
        sample_hard_negatives(torch.ones(3, 1))


def test_positive_index_for_a_block_of_a_gathered_matrix():
    similarity = torch.zeros(2, 4)
    samples, _ = draws(similarity, n=300)  # default: positive = column i
    positive = torch.tensor([2, 3])  # rank 1 of 2, two rows each
    gen = torch.Generator().manual_seed(4)
    picked = torch.stack([sample_hard_negatives(similarity, None, 1.0, gen, positive)[0] for _ in range(300)])
    assert not (picked == positive).any() and set(picked[:, 0].tolist()) == {0, 1, 3}


def test_itm_loss_is_plain_cross_entropy_on_raw_logits_with_accuracy():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0], [40.0, -40.0]], requires_grad=True)
    labels = torch.tensor([0, 1, 1])
    out = ITMLoss()(logits, labels)
    torch.testing.assert_close(out["itm_loss"], F.cross_entropy(logits, labels))
    assert out["itm_acc"].item() == pytest.approx(2 / 3)
    out["itm_loss"].backward()
    # a confidently wrong logit still gets a gradient (clamping to [1e-7, 1-1e-7] would zero it)
    assert logits.grad[2].abs().min() > 0.3
    assert torch.isfinite(logits.grad).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ITMLoss()(logits, labels)["itm_loss"].dtype == torch.float32


def test_findings_loss_is_multilabel_bce_and_checks_shapes():
    import torch.nn.functional as F

    from mvcm_core.losses import create_loss

    logits = torch.tensor([[2.0, -1.0, 0.0], [0.5, 0.5, -3.0]], requires_grad=True)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    loss = create_loss("findings")(logits, labels)["findings_loss"]
    assert torch.allclose(loss, F.binary_cross_entropy_with_logits(logits, labels))
    loss.backward()
    assert logits.grad[0, 0] < 0 < logits.grad[1, 0]  # pushes positives up and negatives down
    weighted = create_loss("findings", pos_weight=4.0)(logits, labels)["findings_loss"]
    assert weighted > loss
    with pytest.raises(ValueError, match="differ"):
        create_loss("findings")(logits, labels[:, :2])
