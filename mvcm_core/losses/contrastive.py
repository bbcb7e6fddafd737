"""Study-level image-text contrastive (ITC) and inter-view contrastive losses.

One module serves both: ``ContrastiveLoss(name="itc")`` aligns study embeddings with report
embeddings, ``ContrastiveLoss(name="inter_view")`` aligns the frontal and lateral view embeddings of
the same study (MVCM ``itga`` / ``imva``, ALTA ``L_g``, MGCA ITA up to a factor 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mvcm_core.losses._numerics import float32_math, grad_safe_zero
from mvcm_core.losses.distributed import gather_no_grad, gather_with_grad


def contrastive_targets(
    n: int, positive_groups: torch.Tensor | None, label_smoothing: float, device: torch.device
) -> torch.Tensor:
    """Row-stochastic, symmetric target matrix ``[n, n]`` for a symmetric contrastive loss.

    Args:
        n: number of (valid) samples.
        positive_groups: ``[n]`` group ids; samples of one group (identical report text) are all
            positives of each other and share the row's mass. None: only the diagonal.
        label_smoothing: mass ``eps`` spread uniformly over the ``n`` columns, as in
            ``F.cross_entropy(label_smoothing=eps)``.
        device: where to build the matrix.
    """
    if positive_groups is None:
        positives = torch.eye(n, device=device)
    else:
        positives = (positive_groups[:, None] == positive_groups[None, :]).float()  # [n, n]
    positives = positives / positives.sum(dim=1, keepdim=True)
    return (1.0 - label_smoothing) * positives + label_smoothing / n


def gather_pair(
    a: torch.Tensor, b: torch.Tensor, extras: dict[str, torch.Tensor | None], gather: bool
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor | None]]:
    """Gather ``a``, ``b`` with gradients and the per-sample ``extras`` without, when asked to."""
    if not gather:
        return a, b, extras
    gathered = {key: None if value is None else gather_no_grad(value) for key, value in extras.items()}
    return gather_with_grad(a), gather_with_grad(b), gathered


class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE between two batches of L2-normalised embeddings.

    ``loss = (CE(s, Y) + CE(sᵀ, Yᵀ)) / 2`` with ``s = logit_scale · a bᵀ`` over the (gathered) batch and
    ``Y`` the diagonal, or the duplicate-aware multi-positive target when ``positive_groups`` is given.

    Args:
        name: the loss key prefix: ``"itc"`` returns ``{"itc_loss": ...}``.
        label_smoothing: MVCM uses 0.1; 0 is plain InfoNCE.
        gather: under ``torch.distributed`` gather ``a`` and ``b`` from all ranks (with gradients), so
            every rank computes the loss of the global batch.
    """

    def __init__(self, name: str = "itc", label_smoothing: float = 0.0, gather: bool = True) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.name = name
        self.label_smoothing = label_smoothing
        self.gather = gather

    def forward(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        logit_scale: torch.Tensor,
        valid: torch.Tensor | None = None,
        positive_groups: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Score a batch.

        Args:
            a: ``[B, E]`` L2-normalised embeddings (e.g. studies, or frontal views).
            b: ``[B, E]`` L2-normalised embeddings paired row by row with ``a`` (reports, laterals).
            logit_scale: scalar, already exponentiated (``1 / temperature``).
            valid: ``[B]`` bool, False drops the sample's row and column (a study without a lateral).
            positive_groups: ``[B]`` long, equal ids mark identical reports, all positives of each other.
                Ids must be global (comparable across ranks) when gathering.

        Returns:
            ``{"<name>_loss": scalar}``; a grad-safe 0 when no sample is valid.
        """
        key = f"{self.name}_loss"
        with float32_math(a):
            a32, b32, extras = gather_pair(
                a.float(), b.float(), {"valid": valid, "groups": positive_groups}, self.gather
            )
            groups = extras["groups"]
            if extras["valid"] is not None:
                keep = extras["valid"].bool()
                a32, b32 = a32[keep], b32[keep]
                groups = None if groups is None else groups[keep]
            n = a32.shape[0]
            if n == 0:
                return {key: grad_safe_zero(a, b, logit_scale)}
            logits = logit_scale.float() * a32 @ b32.T  # [n, n]
            targets = contrastive_targets(n, groups, self.label_smoothing, a32.device)  # [n, n]
            loss_ab = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
            loss_ba = -(targets.T * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
        return {key: (loss_ab + loss_ba) / 2}
