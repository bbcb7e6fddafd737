"""MGCA token-level bidirectional cross-attention loss (words ↔ patches within each sample).

Words → patches: every word attends over its own sample's patches,
``c_w = normalise(Σ_j softmax_j(⟨w, p_j⟩ / τ) p_j)``; the matrix ``S_ww′ = ⟨w, c_w′⟩ / τ`` of one report
must pick the word's own context (target = diagonal), scored by CE along rows and along columns,
each word weighted by its (clipped, normalised) importance, and the two directions averaged.
Patches → words is the mirror image. ``token_align_loss = L_word + L_patch`` (MGCA sums them).
Batched over samples with masks (MGCA's reference loops over the batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mvcm_core.losses._numerics import MASKED_LOGIT, float32_math, grad_safe_zero


def clipped_token_weights(
    weights: torch.Tensor | None, mask: torch.Tensor, low_q: float = 0.1, high_q: float = 0.9
) -> torch.Tensor:
    """Per-sample token weights clipped to their own [q10, q90] and normalised to sum 1.

    Args:
        weights: ``[B, L]`` non-negative importances (e.g. [CLS] attention), or None for uniform.
        mask: ``[B, L]`` bool, True = real token; masked tokens get weight 0 and are left out of
            the quantiles.

    Returns:
        ``[B, L]`` float32; rows of samples without any real token are all 0.
    """
    mask = mask.bool()
    if weights is None:
        clipped = mask.float()
    else:
        values = weights.detach().float().masked_fill(~mask, float("nan"))  # [B, L], NaN = ignored
        has_token = mask.any(dim=1, keepdim=True)
        safe = torch.where(has_token, values, torch.zeros_like(values))
        low = torch.nanquantile(safe, low_q, dim=1, keepdim=True)  # [B, 1]
        high = torch.nanquantile(safe, high_q, dim=1, keepdim=True)
        clipped = torch.minimum(torch.maximum(safe, low), high).nan_to_num(0.0) * mask.float()
    total = clipped.sum(dim=1, keepdim=True)
    return torch.where(total > 0, clipped / total.clamp(min=1e-12), torch.zeros_like(clipped))


def _attend(
    queries: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Normalised attention read-out of ``keys [B, K, D]`` for ``queries [B, Q, D]`` → ``[B, Q, D]``."""
    scores = queries @ keys.transpose(1, 2) / temperature  # [B, Q, K]
    scores = scores.masked_fill(~key_mask[:, None, :], MASKED_LOGIT)
    return F.normalize(scores.softmax(dim=-1) @ keys, dim=-1)  # [B, Q, D]


def _self_retrieval_loss(
    queries: torch.Tensor,
    contexts: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Per-sample weighted CE of ``S = ⟨q, c⟩ / τ`` against the diagonal, rows and columns averaged.

    Args:
        queries: ``[B, L, D]`` normalised tokens; contexts: ``[B, L, D]`` their attended read-outs.
        mask: ``[B, L]`` bool real tokens (padded ones are never candidates, never scored).
        weights: ``[B, L]`` per-token weights summing to 1 per sample.

    Returns:
        ``[B]`` per-sample loss.
    """
    similarity = queries @ contexts.transpose(1, 2) / temperature  # [B, L, L]: query i vs context j
    pair_mask = mask[:, :, None] & mask[:, None, :]  # [B, L, L]
    similarity = similarity.masked_fill(~pair_mask, MASKED_LOGIT)
    diagonal = similarity.diagonal(dim1=1, dim2=2)  # [B, L]
    ce_rows = torch.logsumexp(similarity, dim=2) - diagonal  # [B, L]: query i picks its context i
    ce_cols = torch.logsumexp(similarity, dim=1) - diagonal  # [B, L]: context j picks its query j
    return ((ce_rows + ce_cols) / 2 * weights).sum(dim=1)


class TokenAlignLoss(nn.Module):
    """MGCA bidirectional token-level alignment loss.

    Args:
        temperature: τ₂ of MGCA (0.1); MVCM's ``itla`` uses 0.07.
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(
        self,
        word_tokens: torch.Tensor,
        word_mask: torch.Tensor,
        patch_tokens: torch.Tensor,
        patch_mask: torch.Tensor | None = None,
        word_weights: torch.Tensor | None = None,
        patch_weights: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Score a batch.

        Args:
            word_tokens: ``[B, T, D]`` word embeddings (sub-words already merged; normalised here).
            word_mask: ``[B, T]`` bool, True = real word (False: padding, [CLS]/[SEP] if excluded).
            patch_tokens: ``[B, P, D]`` patch (or query) embeddings (normalised here).
            patch_mask: ``[B, P]`` bool, True = real patch (False: a missing view's tokens); None = all.
            word_weights: ``[B, T]`` word importances (BERT [CLS] attention); None = uniform.
            patch_weights: ``[B, P]`` patch importances (ViT [CLS] attention); None = uniform.

        Returns:
            ``{"token_align_loss", "token_align_word", "token_align_patch"}``; the loss averages over
            samples with at least one real word and one real patch (grad-safe 0 if none).
        """
        with float32_math(word_tokens):
            words = F.normalize(word_tokens.float(), dim=-1)
            patches = F.normalize(patch_tokens.float(), dim=-1)
            word_mask = word_mask.bool()
            patch_mask = torch.ones(patches.shape[:2], dtype=torch.bool, device=patches.device) \
                if patch_mask is None else patch_mask.bool()
            sample_ok = word_mask.any(dim=1) & patch_mask.any(dim=1)  # [B]
            if not bool(sample_ok.any()):
                zero = grad_safe_zero(word_tokens, patch_tokens)
                return {
                    "token_align_loss": zero,
                    "token_align_word": zero.detach(),
                    "token_align_patch": zero.detach(),
                }
            word_w = clipped_token_weights(word_weights, word_mask)  # [B, T]
            patch_w = clipped_token_weights(patch_weights, patch_mask)  # [B, P]
            word_context = _attend(words, patches, patch_mask, self.temperature)  # [B, T, D]
            patch_context = _attend(patches, words, word_mask, self.temperature)  # [B, P, D]
            word_loss = _self_retrieval_loss(words, word_context, word_mask, word_w, self.temperature)
            patch_loss = _self_retrieval_loss(patches, patch_context, patch_mask, patch_w, self.temperature)
            count = sample_ok.float().sum()
            word_loss = (word_loss * sample_ok.float()).sum() / count
            patch_loss = (patch_loss * sample_ok.float()).sum() / count
        return {
            "token_align_loss": word_loss + patch_loss,
            "token_align_word": word_loss.detach(),
            "token_align_patch": patch_loss.detach(),
        }
