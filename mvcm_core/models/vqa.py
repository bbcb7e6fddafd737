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

from mvcm_core.config import POSITION_DEPTH_TERMS, POSITION_SIDE_TERMS, VIEW_IDS
from mvcm_core.models.fusion import Attention

SLOT_FEATURES = 6  # a named finding's evidence: p(left), p(right), side valid, p(anterior), p(posterior), depth valid


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

    def encode_prior(self, prior: torch.Tensor) -> torch.Tensor:
        """The prior after its self-attention block: ``[A_w, W] -> [1, A_w, W]`` (the same for every input)."""
        prior = prior.unsqueeze(0)  # [A_w, W] -> [1, A_w, W]
        prior = self.prior_norm1(prior + self.prior_attention(prior, prior, None))
        return self.prior_norm2(prior + self.prior_mlp(prior))

    def prior_keys_values(self, prior: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys and values ``2 x [1, h, A_w, W/h]`` of the prior ``[A_w, W]``, for caching."""
        return self.cross_attention.keys_values(self.encode_prior(prior))

    def forward(self, tokens: torch.Tensor, prior: torch.Tensor | None,
                prior_kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``tokens [B, L, W]`` with the prior ``[A_w, W]`` (or its cached :meth:`prior_keys_values`)."""
        if prior_kv is None:
            prior = self.encode_prior(prior).expand(tokens.shape[0], -1, -1)  # [1, A_w, W] -> [B, A_w, W]
        attended = self.cross_norm(tokens + self.cross_attention(tokens, prior, None, kv=prior_kv))
        gate = torch.sigmoid(self.gate(attended))
        self.last_gate = gate.detach()
        mixed = gate * attended + (1.0 - gate) * tokens
        return self.out_norm(mixed + self.out_mlp(mixed))


def region_weights(views: int, prefix: int, grid: int, regions: int) -> torch.Tensor:
    """``[V * n * n, V * (prefix + grid²)]`` 0/1: which study tokens fall in each view's grid region.

    Each view's tokens are its ``prefix`` tokens, then its ``grid × grid`` cells row by row; the
    prefix tokens belong to no region.
    """
    if regions < 1 or grid % regions:
        raise ValueError(f"a {grid}×{grid} token grid cannot be split into {regions}×{regions} regions")
    length = prefix + grid * grid
    weights = torch.zeros(views * regions * regions, views * length)
    cells = torch.arange(grid * grid)
    region = (cells // grid) // (grid // regions) * regions + (cells % grid) // (grid // regions)  # [grid²]
    for view in range(views):
        weights[view * regions * regions + region, view * length + prefix + cells] = 1.0
    return weights


def position_validity(view_ids: torch.Tensor, view_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(side_valid [B], depth_valid [B])`` of ``view_ids`` / ``view_mask [B, V]``: the side heads read a
    frontal view in slot 0, the depth heads a lateral view in slot 1."""
    return (view_mask[:, 0] & (view_ids[:, 0] == VIEW_IDS["frontal"]),
            view_mask[:, 1] & (view_ids[:, 1] == VIEW_IDS["lateral"]))


def position_evidence(side_logits: torch.Tensor, side_valid: torch.Tensor, depth_logits: torch.Tensor,
                      depth_valid: torch.Tensor) -> torch.Tensor:
    """``[B, 2S + 1 + 2D + 1]``: the position heads' probabilities, zero where their view is absent, and validity.

    ``side_logits [B, 2S]`` come from the frontal view and ``depth_logits [B, 2D]`` from the lateral
    (:meth:`~mvcm_core.models.mvcm.MVCM.encode_study`); ``*_valid [B]`` say whether that view exists.
    Detached: the heads keep what their own losses taught them.
    """
    side_valid = side_valid.to(side_logits.dtype).unsqueeze(-1)  # [B] -> [B, 1]
    depth_valid = depth_valid.to(depth_logits.dtype).unsqueeze(-1)  # [B] -> [B, 1]
    return torch.cat([torch.sigmoid(side_logits.detach()) * side_valid, side_valid,
                      torch.sigmoid(depth_logits.detach()) * depth_valid, depth_valid], dim=-1)


def evidence_slots(side_terms: tuple[str, ...] = POSITION_SIDE_TERMS,
                   depth_terms: tuple[str, ...] = POSITION_DEPTH_TERMS) -> torch.Tensor:
    """``[E, (K + 1) * 6]`` 0/1 map from :func:`position_evidence` to one slot per side term plus a "none" slot.

    Slot ``k`` holds term ``k``'s left / right probabilities and the side validity, then, for a term
    the depth head scores, its anterior / posterior probabilities and the depth validity (zeros
    otherwise). The last slot is all zeros: the question names no finding the heads locate.
    """
    sides, depths = len(side_terms), len(depth_terms)
    slots = torch.zeros(2 * sides + 1 + 2 * depths + 1, (sides + 1) * SLOT_FEATURES)
    for k, term in enumerate(side_terms):
        column = k * SLOT_FEATURES
        slots[2 * k, column] = slots[2 * k + 1, column + 1] = slots[2 * sides, column + 2] = 1.0
        if term in depth_terms:
            first = 2 * sides + 1 + 2 * depth_terms.index(term)
            slots[first, column + 3] = slots[first + 1, column + 4] = slots[-1, column + 5] = 1.0
    return slots


def pointer_targets(terms: list[str | None]) -> torch.Tensor:
    """``[B]`` pointer targets: the side term a question names, the "none" slot, or -100 (not known)."""
    none = len(POSITION_SIDE_TERMS)
    return torch.tensor([-100 if term is None else POSITION_SIDE_TERMS.index(term) if term in POSITION_SIDE_TERMS
                         else none for term in terms], dtype=torch.long)


class VQAHead(nn.Module):
    """``(fused text [B,T,W], fused image [B,P,W], masks, prior [A_w, W] | None) -> logits [B, A]``.

    The classifier reads the text [CLS], the mean of the image tokens, with ``regions``
    (``[R, P]`` from :func:`region_weights`) the mean of each region's real tokens and, with
    ``evidence_dim``, the position heads' evidence (:func:`position_evidence`) projected to the width.
    With ``pointer`` the question [CLS] also points at the finding it names (a softmax over
    :func:`evidence_slots`, trained on the questions' terms) and the classifier reads that finding's
    own side and depth probabilities.
    """

    def __init__(self, width: int, num_answers: int, heads: int, gca: bool,
                 regions: torch.Tensor | None = None, evidence_dim: int = 0, pointer: bool = False) -> None:
        super().__init__()
        self.gca = GatedCrossAttention(width, heads) if gca else None
        self.register_buffer("regions", regions, persistent=False)
        self.evidence = nn.Sequential(nn.Linear(evidence_dim, width), nn.GELU()) if evidence_dim else None
        self.pointer = self.pointed = None
        if pointer:
            if not evidence_dim:
                raise ValueError("the evidence pointer needs the position evidence (heads.vqa_evidence)")
            self.register_buffer("slots", evidence_slots(), persistent=False)
            self.pointer = nn.Linear(width, self.slots.shape[1] // SLOT_FEATURES)
            self.pointed = nn.Sequential(nn.Linear(SLOT_FEATURES, width), nn.GELU())
        extra = (1 if evidence_dim else 0) + (1 if pointer else 0)
        inputs = (2 + (0 if regions is None else regions.shape[0]) + extra) * width
        self.classifier = nn.Sequential(nn.Linear(inputs, 2 * width), nn.LayerNorm(2 * width), nn.GELU(),
                                        nn.Linear(2 * width, num_answers))

    def forward(self, text: torch.Tensor, text_mask: torch.Tensor | None, image: torch.Tensor,
                image_mask: torch.Tensor | None, prior: torch.Tensor | None = None,
                prior_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
                evidence: torch.Tensor | None = None, return_pointer: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[B, A]`` (see :meth:`classify`); ``image_mask`` None = every image token is real;
        ``prior_kv`` = a cached prior."""
        if self.gca is not None:
            text, image = self.inject_prior(text, image, prior, prior_kv)
        return self.classify(text, image, image_mask, evidence, return_pointer)

    def inject_prior(self, text: torch.Tensor, image: torch.Tensor, prior: torch.Tensor | None = None,
                     prior_kv: tuple[torch.Tensor, torch.Tensor] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """The gated cross-attention on every token; each token independently, so masks are not needed."""
        if prior is None and prior_kv is None:
            raise ValueError("the gated cross-attention head needs the answer prior")
        tokens = self.gca(torch.cat([text, image], dim=1), prior, prior_kv)  # [B, T + P, W]
        return tokens[:, : text.shape[1]], tokens[:, text.shape[1]:]

    def point(self, question: torch.Tensor, evidence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``([B, 6] the named finding's evidence, [B, K + 1] pointer logits)`` from the question [CLS] ``[B, W]``."""
        logits = self.pointer(question)  # [B, K + 1]
        slots = (evidence @ self.slots.to(evidence.dtype)).unflatten(-1, (logits.shape[-1], SLOT_FEATURES))  # [B, E] -> [B, K + 1, 6]
        weights = logits.softmax(-1).to(evidence.dtype).unsqueeze(-1)  # [B, K + 1, 1]
        return (weights * slots).sum(1), logits

    def classify(self, text: torch.Tensor, image: torch.Tensor, image_mask: torch.Tensor | None,
                 evidence: torch.Tensor | None = None, return_pointer: bool = False
                 ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[B, A]`` from the text [CLS], the image mean, the region means (after the prior) and
        the position evidence ``[B, E]`` (required when the head was built with ``evidence_dim``).

        With ``return_pointer`` also the pointer logits ``[B, K + 1]`` (None without a pointer)."""
        if image_mask is None:
            pooled_image = image.mean(1)
        else:
            image_weights = image_mask.unsqueeze(-1).to(image.dtype)
            pooled_image = (image * image_weights).sum(1) / image_weights.sum(1).clamp_min(1.0)
        features = [text[:, 0], pooled_image]
        if self.regions is not None:
            real = torch.ones(image.shape[:2], dtype=image.dtype, device=image.device) if image_mask is None \
                else image_mask.to(image.dtype)  # [B, P]
            weights = self.regions.to(image.dtype)  # [R, P]
            sums = torch.einsum("rp,bpw->brw", weights, image * real.unsqueeze(-1))  # [B, R, W]
            counts = torch.einsum("rp,bp->br", weights, real).clamp_min(1.0)  # [B, R]
            features.append((sums / counts.unsqueeze(-1)).flatten(1))  # [B, R, W] -> [B, R*W]
        if self.evidence is not None:
            if evidence is None:
                raise ValueError("this VQA head reads the position heads' evidence; none was given")
            evidence = evidence.to(image.dtype)
            features.append(self.evidence(evidence))  # [B, E] -> [B, W]
        pointer_logits = None
        if self.pointer is not None:
            named, pointer_logits = self.point(text[:, 0], evidence)
            features.append(self.pointed(named))  # [B, 6] -> [B, W]
        logits = self.classifier(torch.cat(features, dim=-1))
        return (logits, pointer_logits) if return_pointer else logits
