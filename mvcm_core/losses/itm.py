"""Image-text matching (ITM) with hard negatives sampled from the similarity rows.

Two bugs of the public AMiF/MVCM code are avoided on purpose:

- ``torch.multinomial`` was fed raw cosine scores (negative for dissimilar pairs, so invalid
  "probabilities") after deleting the positive column, which shifted every later index by one.
  Here the weights are ``softmax(similarity / temperature)`` with excluded entries at −inf, on the
  full row, so the probabilities are valid and the sampled index is the real column.
- The ITM logits were clamped to ``[1e-7, 1 − 1e-7]`` before the cross-entropy, which kills the
  gradient of confident logits. Here the loss is plain cross-entropy on the raw logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mvcm_core.losses._numerics import float32_math, grad_safe_zero


@torch.no_grad()
def sample_hard_negatives(
    similarity: torch.Tensor,
    false_negative_mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    positive_index: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one negative column per row, ``P(j) ∝ exp(similarity_ij / temperature)`` over allowed ``j``.

    Args:
        similarity: ``[B, M]`` scores (any sign), row i = query i against M candidates.
        false_negative_mask: ``[B, M]`` bool, True = never a negative (same findings, duplicate report).
        temperature: softmax temperature; lower = harder negatives.
        generator: for reproducible draws (on ``similarity``'s device).
        positive_index: ``[B]`` column of each row's own positive, always excluded; default
            ``arange(B)`` (the diagonal of a square matrix). Pass ``arange(B) + offset`` for a row
            block of a gathered similarity matrix.

    Returns:
        ``(negatives [B] long, fallback [B] bool)``. ``fallback`` marks rows where every candidate
        except the positive was excluded: they get the highest-scoring non-positive column anyway
        (a false negative, better than a crash); the caller may drop those pairs.
    """
    b, m = similarity.shape
    if m < 2:
        raise ValueError("hard-negative sampling needs at least two candidates per row")
    rows = torch.arange(b, device=similarity.device)
    positives = rows if positive_index is None else positive_index.to(similarity.device)
    is_positive = torch.zeros(b, m, dtype=torch.bool, device=similarity.device)
    is_positive[rows, positives] = True
    excluded = is_positive if false_negative_mask is None else is_positive | false_negative_mask.bool()
    logits = similarity.float() / temperature
    allowed_logits = logits.masked_fill(excluded, float("-inf"))
    fallback = excluded.all(dim=1)  # [B]
    hardest = logits.masked_fill(is_positive, float("-inf")).argmax(dim=1)  # [B], never the positive
    # rows without an allowed candidate: a one-hot on the hardest non-positive column
    one_hot = torch.full_like(logits, float("-inf"))
    one_hot[rows, hardest] = 0.0
    allowed_logits = torch.where(fallback[:, None], one_hot, allowed_logits)
    probabilities = allowed_logits.softmax(dim=1)  # [B, M], rows of non-negative weights summing to 1
    negatives = torch.multinomial(probabilities, num_samples=1, generator=generator).squeeze(1)
    return negatives, fallback


class ITMLoss(nn.Module):
    """Two-way cross-entropy on raw ITM logits (match = 1, mismatch = 0) with an accuracy diagnostic."""

    def forward(self, itm_logits: torch.Tensor, itm_labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Score predictions.

        Args:
            itm_logits: ``[M, 2]`` raw logits (no sigmoid, no clamping), column 1 = "matches".
            itm_labels: ``[M]`` long, 1 for positive pairs, 0 for negatives.

        Returns:
            ``{"itm_loss": scalar, "itm_acc": accuracy}``.
        """
        if itm_logits.shape[0] == 0:
            zero = grad_safe_zero(itm_logits)
            return {"itm_loss": zero, "itm_acc": zero.detach()}
        with float32_math(itm_logits):
            logits = itm_logits.float()
            loss = F.cross_entropy(logits, itm_labels.long())
            accuracy = (logits.argmax(dim=1) == itm_labels).float().mean()
        return {"itm_loss": loss, "itm_acc": accuracy.detach()}
