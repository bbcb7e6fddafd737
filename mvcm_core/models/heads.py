"""Heads: projections into the joint spaces, ITM, tied MLM, a light MAE decoder, and cell score maps."""

from __future__ import annotations

import math

import torch
from torch import nn


class Projection(nn.Module):
    """Linear → GELU → Linear (no batch norm: works for tiny batches and across ranks)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or max(in_dim, out_dim)
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TiedMLMHead(nn.Module):
    """``[B, T, W] -> [B, T, V]`` scored against the text encoder's word embedding table."""

    def __init__(self, width: int, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(width, word_embeddings.embedding_dim), nn.GELU(),
                                       nn.LayerNorm(word_embeddings.embedding_dim))
        self.word_embeddings = [word_embeddings]  # a list: do not register it twice as a submodule
        self.bias = nn.Parameter(torch.zeros(word_embeddings.num_embeddings))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.transform(hidden) @ self.word_embeddings[0].weight.t() + self.bias


class CellScoreHead(nn.Module):
    """``cells [N, C, D] -> logits [N, K]``: what each cell shows, averaged over where each class looks.

    A cell scores every class from its own feature alone, and a learned softmax over cells per class
    (uniform at first) says which cells count, for example the left lung for "opacity, left". So the
    tower's cells must say locally what is there: the position is read by the head, not hidden in a
    pooled vector.
    """

    def __init__(self, dim: int, classes: int, cells: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, classes)
        self.where = nn.Parameter(torch.zeros(cells, classes))  # [C, K] cell logits per class

    def forward(self, cells: torch.Tensor) -> torch.Tensor:
        scores = self.score(cells)  # [N, C, K]
        weights = self.where.softmax(dim=0).to(scores.dtype)  # [C, K], sums to 1 over cells
        return (scores * weights).sum(dim=1)  # [N, C, K] -> [N, K]


def sincos_2d(grid: int, width: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embeddings ``[grid*grid, width]`` (MAE)."""
    quarter = width // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32),
                            indexing="ij")
    parts = [torch.sin(ys.flatten()[:, None] * omega), torch.cos(ys.flatten()[:, None] * omega),
             torch.sin(xs.flatten()[:, None] * omega), torch.cos(xs.flatten()[:, None] * omega)]
    embedding = torch.cat(parts, dim=1)
    return nn.functional.pad(embedding, (0, width - embedding.shape[1]))


class MIMDecoder(nn.Module):
    """MAE decoder: visible tokens + mask tokens at their positions → pixels of every patch."""

    def __init__(self, encoder_width: int, width: int, layers: int, num_patches: int, patch_pixels: int) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        self.embed = nn.Linear(encoder_width, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.normal_(self.mask_token, std=0.02)
        grid = int(math.isqrt(num_patches))
        self.register_buffer("positions", sincos_2d(grid, width).unsqueeze(0), persistent=False)
        self.blocks = nn.Sequential(*[Block(width, num_heads=max(1, width // 32)) for _ in range(layers)])
        self.norm = nn.LayerNorm(width)
        self.predict = nn.Linear(width, patch_pixels)

    def forward(self, visible: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """``visible [M, K, D]`` (patch tokens only), ``ids_restore [M, N]`` → ``[M, N, p*p*C]``."""
        x = self.embed(visible)  # [M, K, W]
        m, k, w = x.shape
        n = ids_restore.shape[1]
        filler = self.mask_token.to(x.dtype).expand(m, n - k, w)
        x = torch.cat([x, filler], dim=1)  # [M, N, W] in shuffled order
        x = torch.gather(x, 1, ids_restore.unsqueeze(-1).expand(-1, -1, w))  # unshuffle -> [M, N, W]
        x = self.blocks(x + self.positions.to(x.dtype))
        return self.predict(self.norm(x))
