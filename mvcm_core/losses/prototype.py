"""MGCA disease-level prototype loss: SwAV-style swapped prediction with Sinkhorn-Knopp codes.

Scores ``z = C·i`` and ``z′ = C·t`` against ``K`` L2-normalised prototypes ``C``; codes
``q = SinkhornKnopp(exp(z / ε))`` (equal mass per prototype, one unit per sample, no gradient,
sums taken over all ranks); ``proto_loss = ½ [H(q_i, softmax(z′/τ)) + H(q_t, softmax(z/τ))]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mvcm_core.losses._numerics import float32_math
from mvcm_core.losses.distributed import all_reduce_max_, all_reduce_sum_


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Balanced soft assignment of samples to prototypes (SwAV), summed across ranks when distributed.

    Args:
        scores: ``[B, K]`` sample-prototype similarities of this rank's samples.
        epsilon: entropic temperature of the codes.
        iterations: Sinkhorn-Knopp iterations (MGCA: 3).

    Returns:
        ``[B, K]`` float32 codes: every row sums to 1; over the global batch every column sums to
        ``B_global / K`` at convergence (after few iterations, approximately).
    """
    logits = scores.float() / epsilon
    # the global maximum is a constant factor, removed by the first normalisation: only for range
    logits = logits - all_reduce_max_(logits.max().clone())
    q = torch.exp(logits).T  # [K, B]
    n_prototypes = q.shape[0]
    n_samples = all_reduce_sum_(torch.tensor(float(q.shape[1]), device=q.device))
    q /= all_reduce_sum_(q.sum())
    for _ in range(iterations):
        q /= all_reduce_sum_(q.sum(dim=1, keepdim=True))  # each prototype: total mass 1 ...
        q /= n_prototypes  # ... then 1/K
        q /= q.sum(dim=0, keepdim=True)  # each sample: mass 1 ...
        q /= n_samples  # ... then 1/B_global
    return (q * n_samples).T  # [B, K], rows sum to 1


class PrototypeLoss(nn.Module):
    """Swapped prototype prediction between image and text embeddings (MGCA ``L_proto``).

    Args:
        num_prototypes: K (MGCA: 500).
        embed_dim: E of the embeddings.
        epsilon: Sinkhorn-Knopp ε (0.05).
        sinkhorn_iterations: 3.
        temperature: τ₃ of the prototype softmax (0.2).
        freeze_prototypes: when True the prototypes get no gradient (MGCA freezes them during the
            first epoch); the trainer may flip the attribute of the same name at any time.
    """

    def __init__(
        self,
        num_prototypes: int = 500,
        embed_dim: int = 128,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        temperature: float = 0.2,
        freeze_prototypes: bool = False,
    ) -> None:
        super().__init__()
        self.prototypes = nn.Linear(embed_dim, num_prototypes, bias=False)
        self.epsilon = epsilon
        self.sinkhorn_iterations = sinkhorn_iterations
        self.temperature = temperature
        self.freeze_prototypes = freeze_prototypes

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Re-project every prototype row onto the unit sphere (in place)."""
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def forward(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> dict[str, torch.Tensor]:
        """Score a batch.

        Args:
            image_embeds: ``[B, E]`` global image (study) embeddings (normalised here).
            text_embeds: ``[B, E]`` global report embeddings, paired row by row.

        Returns:
            ``{"proto_loss": scalar}`` (mean over this rank's samples).
        """
        self.normalize_prototypes()
        with float32_math(image_embeds):
            weight = self.prototypes.weight.float()
            weight = weight.detach() if self.freeze_prototypes else weight
            image_scores = F.linear(F.normalize(image_embeds.float(), dim=-1), weight)  # [B, K]
            text_scores = F.linear(F.normalize(text_embeds.float(), dim=-1), weight)  # [B, K]
            image_codes = sinkhorn_knopp(image_scores.detach(), self.epsilon, self.sinkhorn_iterations)
            text_codes = sinkhorn_knopp(text_scores.detach(), self.epsilon, self.sinkhorn_iterations)
            text_log_prob = F.log_softmax(text_scores / self.temperature, dim=1)
            image_log_prob = F.log_softmax(image_scores / self.temperature, dim=1)
            image_to_text = -(image_codes * text_log_prob).sum(dim=1).mean()
            text_to_image = -(text_codes * image_log_prob).sum(dim=1).mean()
        return {"proto_loss": (image_to_text + text_to_image) / 2}
