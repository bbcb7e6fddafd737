"""AMiF word–patch alignment by optimal transport (UNITER-style WRA distance).

Cost ``C_ij = 1 − cos(word_i, patch_j)`` between the real text tokens and the real image tokens of a
sample; uniform marginals over those tokens; the transport plan ``T`` is computed without gradient
(IPOT by default: β = 0.5, 50 iterations, k = 1); ``ot_align_loss = mean_b ⟨C_b, T_b⟩``, so gradients
reach the tokens only through the cost.

Plans are batched over samples; padding is excluded with masks (a padded token has zero marginal
mass, so it neither sends nor receives transport).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mvcm_core.losses._numerics import MASKED_LOGIT, float32_math, grad_safe_zero

BACKENDS = ("ipot", "sinkhorn", "emd")


def uniform_marginal(mask: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` float32: ``1 / (number of real tokens)`` on real tokens, 0 on padding."""
    mask = mask.float()
    return mask / mask.sum(dim=1, keepdim=True).clamp(min=1.0)


@torch.no_grad()
def ipot_plan(
    cost: torch.Tensor, row_mask: torch.Tensor, col_mask: torch.Tensor,
    beta: float = 0.5, iterations: int = 50, inner_k: int = 1,
) -> torch.Tensor:
    """Inexact proximal point OT (Xie et al., 2019), batched; converges to the exact plan.

    Each outer step solves ``min ⟨C, T⟩ + β·KL(T ‖ T_prev)`` approximately with ``inner_k`` Sinkhorn
    scalings of the kernel ``exp(−C/β) ⊙ T_prev``.

    Args:
        cost: ``[B, R, K]`` transport cost.
        row_mask: ``[B, R]`` bool, True = real row token; col_mask: ``[B, K]`` likewise.

    Returns:
        ``[B, R, K]`` float32 plan: columns sum to ``1/K_real`` (exactly), rows to ``1/R_real`` (at
        convergence); 0 on padding.
    """
    cost = cost.float()
    row_mass, col_mass = uniform_marginal(row_mask), uniform_marginal(col_mask)  # [B, R], [B, K]
    joint = (row_mask[:, :, None] & col_mask[:, None, :]).float()  # [B, R, K]
    kernel = torch.exp(-cost / beta) * joint
    plan = joint.clone()
    col_scale = col_mask.float()  # [B, K]
    for _ in range(iterations):
        q = kernel * plan  # [B, R, K]
        for _ in range(inner_k):
            row_sum = (q @ col_scale[:, :, None]).squeeze(2)  # [B, R]
            row_scale = torch.where(row_mass > 0, row_mass / row_sum.clamp(min=1e-30), 0.0)
            col_sum = (row_scale[:, None, :] @ q).squeeze(1)  # [B, K]
            col_scale = torch.where(col_mass > 0, col_mass / col_sum.clamp(min=1e-30), 0.0)
        plan = row_scale[:, :, None] * q * col_scale[:, None, :]
    return plan


@torch.no_grad()
def sinkhorn_plan(
    cost: torch.Tensor, row_mask: torch.Tensor, col_mask: torch.Tensor,
    epsilon: float = 0.05, iterations: int = 50,
) -> torch.Tensor:
    """Entropic OT ``min ⟨C, T⟩ − ε·H(T)`` by batched log-domain Sinkhorn; shapes as :func:`ipot_plan`."""
    cost = cost.float()
    joint = row_mask[:, :, None] & col_mask[:, None, :]  # [B, R, K]
    log_kernel = (-cost / epsilon).masked_fill(~joint, MASKED_LOGIT)
    log_row = torch.log(uniform_marginal(row_mask)).clamp(min=MASKED_LOGIT)  # [B, R]
    log_col = torch.log(uniform_marginal(col_mask)).clamp(min=MASKED_LOGIT)  # [B, K]
    f = torch.zeros_like(log_row)
    g = torch.zeros_like(log_col)
    for _ in range(iterations):
        f = log_row - torch.logsumexp(log_kernel + g[:, None, :], dim=2)
        g = log_col - torch.logsumexp(log_kernel + f[:, :, None], dim=1)
    return torch.exp(f[:, :, None] + log_kernel + g[:, None, :]) * joint.float()


@torch.no_grad()
def emd_plan(cost: torch.Tensor, row_mask: torch.Tensor, col_mask: torch.Tensor) -> torch.Tensor:
    """Exact OT plan with POT's network simplex (``ot.emd``), one sample at a time (POT is not batched)."""
    try:
        import ot
    except ImportError as error:  # pragma: no cover - POT is a core dependency
        raise ImportError("the 'emd' OT backend needs POT: pip install 'POT>=0.9.4'") from error
    plan = torch.zeros_like(cost, dtype=torch.float32)
    for index in range(cost.shape[0]):
        rows, cols = row_mask[index].nonzero().squeeze(1), col_mask[index].nonzero().squeeze(1)
        if rows.numel() == 0 or cols.numel() == 0:
            continue
        sub_cost = cost[index][rows][:, cols].double().cpu().numpy()  # [R_real, K_real]
        a = torch.full((rows.numel(),), 1.0 / rows.numel(), dtype=torch.float64).numpy()
        b = torch.full((cols.numel(),), 1.0 / cols.numel(), dtype=torch.float64).numpy()
        sub_plan = torch.from_numpy(ot.emd(a, b, sub_cost)).float().to(cost.device)
        plan[index, rows[:, None], cols[None, :]] = sub_plan
    return plan


class OTAlignLoss(nn.Module):
    """Word–patch optimal-transport distance, gradients through the cost only.

    Args:
        beta: IPOT proximal step (AMiF: 0.5).
        iterations: outer IPOT / Sinkhorn iterations (AMiF: 50).
        inner_k: IPOT inner scalings per outer step (AMiF: 1).
        backend: ``"ipot"`` (exact in the limit, default), ``"sinkhorn"`` (entropic, ``epsilon``),
            or ``"emd"`` (POT's exact solver, per-sample loop; for checks and small batches).
        epsilon: entropic regularisation of the Sinkhorn backend.
    """

    def __init__(
        self,
        beta: float = 0.5,
        iterations: int = 50,
        inner_k: int = 1,
        backend: str = "ipot",
        epsilon: float = 0.05,
    ) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.beta, self.iterations, self.inner_k = beta, iterations, inner_k
        self.backend, self.epsilon = backend, epsilon

    def plan(self, cost: torch.Tensor, text_mask: torch.Tensor, image_mask: torch.Tensor) -> torch.Tensor:
        """Transport plan ``[B, T, P]`` for ``cost [B, T, P]`` with the configured backend (no gradient)."""
        if self.backend == "ipot":
            return ipot_plan(cost, text_mask, image_mask, self.beta, self.iterations, self.inner_k)
        if self.backend == "sinkhorn":
            return sinkhorn_plan(cost, text_mask, image_mask, self.epsilon, self.iterations)
        return emd_plan(cost, text_mask, image_mask)

    def forward(
        self,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        image_tokens: torch.Tensor,
        image_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Score a batch.

        Args:
            text_tokens: ``[B, T, D]`` fused text tokens.
            text_mask: ``[B, T]`` bool, True = real token (exclude padding and, if wished, [CLS]/[SEP]).
            image_tokens: ``[B, P, D]`` fused image tokens.
            image_mask: ``[B, P]`` bool, True = real token; None = all real.

        Returns:
            ``{"ot_align_loss": scalar}``: mean over samples with real tokens on both sides.
        """
        with float32_math(text_tokens):
            text = F.normalize(text_tokens.float(), dim=-1)
            image = F.normalize(image_tokens.float(), dim=-1)
            text_mask = text_mask.bool()
            image_mask = torch.ones(image.shape[:2], dtype=torch.bool, device=image.device) \
                if image_mask is None else image_mask.bool()
            cost = 1.0 - text @ image.transpose(1, 2)  # [B, T, P]
            plan = self.plan(cost.detach(), text_mask, image_mask)  # [B, T, P], no gradient
            distance = (cost * plan).sum(dim=(1, 2))  # [B]
            sample_ok = text_mask.any(dim=1) & image_mask.any(dim=1)
            if not bool(sample_ok.any()):
                return {"ot_align_loss": grad_safe_zero(text_tokens, image_tokens)}
            loss = (distance * sample_ok.float()).sum() / sample_ok.float().sum()
        return {"ot_align_loss": loss}
