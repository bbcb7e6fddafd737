"""VQA head: classification over an answer vocabulary, with AMiF's Gated Cross-Attention prior.

The prior is the word embeddings of every distinct *word* of the answer vocabulary (split on
whitespace and de-duplicated by exact match: AMiF's public code de-duplicated by substring, which
drops "no" once "nodule" is in). Fused question+image tokens attend to the prior; a per-channel
sigmoid gate decides how much of that knowledge to let in (AMiF §2.4):

    y ← LN(y + SelfAttn(y));  y ← LN(y + FFN(y))
    x₁ = LN(x + CrossAttn(x, y));  g = σ(W x₁ + b);  h = g ⊙ x₁ + (1 − g) ⊙ x;  out = LN(h + FFN(h))
"""

from __future__ import annotations

import torch
from torch import nn

from mvcm_core.models.fusion import Attention


def answer_prior_words(answers: list[str]) -> list[str]:
    """Distinct words of the answer vocabulary, in first-seen order (exact match, not substring)."""
    seen: dict[str, None] = {}
    for answer in answers:
        for word in answer.lower().split():
            seen.setdefault(word, None)
    return list(seen)


class GatedCrossAttention(nn.Module):
    """Inject the answer-vocabulary prior ``[A_w, W]`` into fused tokens ``[B, L, W]`` through a gate."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.prior_attention = Attention(width, heads)
        self.prior_norm1, self.prior_norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.prior_mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.cross_attention = Attention(width, heads)
        self.cross_norm = nn.LayerNorm(width)
        self.gate = nn.Linear(width, width)
        self.out_mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.out_norm = nn.LayerNorm(width)
        self.last_gate: torch.Tensor | None = None

    def forward(self, tokens: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        prior = prior.unsqueeze(0)  # [A_w, W] -> [1, A_w, W]
        prior = self.prior_norm1(prior + self.prior_attention(prior, prior, None))
        prior = self.prior_norm2(prior + self.prior_mlp(prior)).expand(tokens.shape[0], -1, -1)
        attended = self.cross_norm(tokens + self.cross_attention(tokens, prior, None))
        gate = torch.sigmoid(self.gate(attended))
        self.last_gate = gate.detach()
        mixed = gate * attended + (1.0 - gate) * tokens
        return self.out_norm(mixed + self.out_mlp(mixed))


class VQAHead(nn.Module):
    """``(fused text [B,T,W], fused image [B,P,W], masks, prior [A_w, W] | None) -> logits [B, A]``."""

    def __init__(self, width: int, num_answers: int, heads: int, gca: bool) -> None:
        super().__init__()
        self.gca = GatedCrossAttention(width, heads) if gca else None
        self.classifier = nn.Sequential(nn.Linear(2 * width, 2 * width), nn.LayerNorm(2 * width), nn.GELU(),
                                        nn.Linear(2 * width, num_answers))

    def forward(self, text: torch.Tensor, text_mask: torch.Tensor, image: torch.Tensor, image_mask: torch.Tensor,
                prior: torch.Tensor | None = None) -> torch.Tensor:
        if self.gca is not None:
            if prior is None:
                raise ValueError("the gated cross-attention head needs the answer prior")
            tokens = self.gca(torch.cat([text, image], dim=1), prior)  # [B, T + P, W]
            text, image = tokens[:, : text.shape[1]], tokens[:, text.shape[1]:]
        image_weights = image_mask.unsqueeze(-1).to(image.dtype)
        pooled_image = (image * image_weights).sum(1) / image_weights.sum(1).clamp_min(1.0)
        return self.classifier(torch.cat([text[:, 0], pooled_image], dim=-1))
