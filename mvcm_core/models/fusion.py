"""Co-attention fusion (M3AE / AMiF): each stream self-attends, then attends to the other stream.

Masks are boolean ``[B, L]`` with True = a real token (padding and absent views are False).
The text stream may also attend to learned memory slots (MPMA's memory-augmented fusion).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mvcm_core.config import FusionCfg


class Attention(nn.Module):
    """Multi-head attention; keeps its last attention weights when ``keep_weights`` is set."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads, self.dropout = heads, dropout
        self.query = nn.Linear(width, width)
        self.key_value = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)
        self.keep_weights = False
        self.last_weights: torch.Tensor | None = None

    def keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``2 x [B, h, Lk, W/h]`` of a context ``[B, Lk, W]`` (cacheable when it is constant)."""
        b, lk, w = context.shape
        h = self.heads
        k, v = self.key_value(context).view(b, lk, 2, h, w // h).permute(2, 0, 3, 1, 4)  # -> 2 x [B, h, Lk, W/h]
        return k, v

    def forward(self, x: torch.Tensor, context: torch.Tensor | None, context_mask: torch.Tensor | None,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Attend ``x [B, Lq, W]`` to ``context [B, Lk, W]``, or to precomputed ``kv`` (batch B or 1)."""
        b, lq, w = x.shape
        h = self.heads
        q = self.query(x).view(b, lq, h, w // h).transpose(1, 2)  # [B, Lq, W] -> [B, h, Lq, W/h]
        k, v = self.keys_values(context) if kv is None else kv
        if k.shape[0] != b:
            k, v = k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)  # a shared context: [1, h, Lk, W/h] -> [B, ...]
        mask = None if context_mask is None else context_mask[:, None, None, :]  # [B, 1, 1, Lk]
        if self.keep_weights:
            scores = (q @ k.transpose(-2, -1)) / (w // h) ** 0.5  # [B, h, Lq, Lk]
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.softmax(dim=-1)
            self.last_weights = weights.detach()
            out = weights @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                 dropout_p=self.dropout if self.training else 0.0)
        return self.out(out.transpose(1, 2).reshape(b, lq, w))  # [B, h, Lq, W/h] -> [B, Lq, W]


class CrossLayer(nn.Module):
    """Pre-norm block: self-attention, cross-attention to a context, feed-forward."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_self, self.norm_cross, self.norm_mlp = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.self_attn = Attention(width, heads, dropout)
        self.cross_attn = Attention(width, heads, dropout)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor | None, context: torch.Tensor,
                context_mask: torch.Tensor | None) -> torch.Tensor:
        normed = self.norm_self(x)
        x = x + self.self_attn(normed, normed, x_mask)
        x = x + self.cross_attn(self.norm_cross(x), context, context_mask)
        return x + self.mlp(self.norm_mlp(x))


class CoAttentionFusion(nn.Module):
    """``forward(text [B,T,W], text_mask, image [B,P,W], image_mask) -> (text', image')``."""

    def __init__(self, cfg: FusionCfg, layers: int | None = None, image_stream: bool = True) -> None:
        super().__init__()
        depth = cfg.layers if layers is None else layers
        self.text_layers = nn.ModuleList(
            CrossLayer(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(depth))
        self.image_layers = nn.ModuleList(
            CrossLayer(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(depth if image_stream else 0))
        self.memory = nn.Parameter(torch.randn(cfg.memory_slots, cfg.width) * 0.02) if cfg.memory_slots else None
        self.norm_text, self.norm_image = nn.LayerNorm(cfg.width), nn.LayerNorm(cfg.width)

    def text_context(self, image: torch.Tensor, image_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Image tokens plus memory slots, as the text stream's cross-attention context."""
        if self.memory is None:
            return image, image_mask
        b = image.shape[0]
        memory = self.memory.unsqueeze(0).expand(b, -1, -1)  # [M, W] -> [B, M, W]
        context = torch.cat([image, memory.to(image.dtype)], dim=1)  # [B, P + M, W]
        if image_mask is None:
            return context, None
        ones = torch.ones(b, memory.shape[1], dtype=torch.bool, device=image.device)
        return context, torch.cat([image_mask, ones], dim=1)

    def forward(self, text: torch.Tensor, text_mask: torch.Tensor | None, image: torch.Tensor,
                image_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        for i, text_layer in enumerate(self.text_layers):
            context, context_mask = self.text_context(image, image_mask)
            new_text = text_layer(text, text_mask, context, context_mask)
            if i < len(self.image_layers):
                image = self.image_layers[i](image, image_mask, text, text_mask)
            text = new_text
        return self.norm_text(text), self.norm_image(image)
