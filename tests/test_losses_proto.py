"""PrototypeLoss (MGCA swapped prototype prediction) and its Sinkhorn-Knopp codes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mvcm_core.losses import PrototypeLoss, sinkhorn_knopp


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def make_loss(k: int = 6, e: int = 8, **kwargs) -> PrototypeLoss:
    torch.manual_seed(0)
    return PrototypeLoss(num_prototypes=k, embed_dim=e, **kwargs)


def test_sinkhorn_codes_have_uniform_marginals():
    scores = unit(12, 8, seed=1) @ unit(4, 8, seed=2).T  # [B=12, K=4]
    codes = sinkhorn_knopp(scores, epsilon=0.05, iterations=3)
    torch.testing.assert_close(codes.sum(1), torch.ones(12))  # one unit of mass per sample, exactly
    converged = sinkhorn_knopp(scores, epsilon=0.05, iterations=200)
    torch.testing.assert_close(converged.sum(0), torch.full((4,), 12 / 4), atol=1e-3, rtol=0)  # B/K each
    greedy = F.softmax(scores / 0.05, dim=1).sum(0)
    assert (codes.sum(0) - 3).abs().max() < (greedy - 3).abs().max()  # 3 iterations already balance
    assert (codes >= 0).all()


def test_sinkhorn_is_stable_for_large_scores():
    codes = sinkhorn_knopp(torch.tensor([[50.0, -50.0], [-50.0, 50.0]]), epsilon=0.05)
    assert torch.isfinite(codes).all()
    torch.testing.assert_close(codes, torch.eye(2))


def test_prototypes_are_renormalised_and_loss_is_finite_with_finite_gradients():
    loss = make_loss()
    with torch.no_grad():
        loss.prototypes.weight.mul_(3.0)
    image = unit(5, 8, seed=3).requires_grad_()
    text = unit(5, 8, seed=4).requires_grad_()
    out = loss(image, text)["proto_loss"]
    out.backward()
    torch.testing.assert_close(loss.prototypes.weight.norm(dim=1), torch.ones(6))
    for grad in (image.grad, text.grad, loss.prototypes.weight.grad):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_loss_is_the_swapped_prediction_formula_with_constant_codes():
    loss = make_loss(temperature=0.2)
    image = unit(4, 8, seed=5).requires_grad_()
    text = unit(4, 8, seed=6).requires_grad_()
    out = loss(image, text)["proto_loss"]
    image_grad, text_grad = torch.autograd.grad(out, (image, text))
    weight = loss.prototypes.weight.detach()
    z_image, z_text = F.normalize(image, dim=-1) @ weight.T, F.normalize(text, dim=-1) @ weight.T
    q_image = sinkhorn_knopp(z_image.detach(), 0.05, 3)  # no gradient through the codes
    q_text = sinkhorn_knopp(z_text.detach(), 0.05, 3)
    expected = -((q_image * F.log_softmax(z_text / 0.2, 1)).sum(1).mean()
                 + (q_text * F.log_softmax(z_image / 0.2, 1)).sum(1).mean()) / 2
    torch.testing.assert_close(out, expected)
    expected_grads = torch.autograd.grad(expected, (image, text))
    torch.testing.assert_close(image_grad, expected_grads[0])
    torch.testing.assert_close(text_grad, expected_grads[1])


def test_paired_embeddings_score_lower_than_mismatched_ones():
    loss = make_loss(k=4)
    with torch.no_grad():
        loss.prototypes.weight.copy_(torch.eye(4, 8))
    image = F.normalize(torch.eye(4, 8) + 0.05 * unit(4, 8, seed=7), dim=-1)
    paired = loss(image, image)["proto_loss"]
    mismatched = loss(image, image.roll(1, dims=0))["proto_loss"]
    assert paired < mismatched - 1.0


def test_frozen_prototypes_get_no_gradient_but_embeddings_do():
    loss = make_loss(freeze_prototypes=True)
    image = unit(5, 8, seed=8).requires_grad_()
    loss(image, unit(5, 8, seed=9))["proto_loss"].backward()
    assert loss.prototypes.weight.grad is None
    assert image.grad.abs().sum() > 0
    loss.freeze_prototypes = False
    loss(image, unit(5, 8, seed=9))["proto_loss"].backward()
    assert loss.prototypes.weight.grad.abs().sum() > 0


def test_bfloat16_autocast_computes_in_float32():
    loss = make_loss()
    image, text = unit(5, 8, seed=10), unit(5, 8, seed=11)
    reference = loss(image, text)["proto_loss"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = loss(image, text)["proto_loss"]
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, reference, atol=1e-6, rtol=1e-6)
