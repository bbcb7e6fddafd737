"""Zero-initialised bottleneck adapters (ALTA): a frozen model plus a few percent of new weights.

An adapter wraps a linear layer: ``y = linear(x); y + up(gelu(down(y)))`` with ``up`` initialised to
zero, so the adapted model computes exactly what the frozen model did until training moves it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class Adapter(nn.Module):
    """Bottleneck MLP whose output starts at exactly zero."""

    def __init__(self, dim: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(nn.functional.gelu(self.down(x)))


class AdaptedLinear(nn.Module):
    """A (frozen) linear layer followed by a residual adapter."""

    def __init__(self, linear: nn.Linear, bottleneck: int) -> None:
        super().__init__()
        self.linear = linear
        self.adapter = Adapter(linear.out_features, bottleneck)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y + self.adapter(y)


def insert_adapters(root: nn.Module, paths: Iterable[str], bottleneck: int) -> list[nn.Module]:
    """Replace each ``nn.Linear`` at a dotted path under ``root`` by an :class:`AdaptedLinear`.

    Returns:
        The new adapter modules (their parameters are the trainable ones).
    """
    adapters = []
    for path in paths:
        parent_path, _, attribute = path.rpartition(".")
        parent = root.get_submodule(parent_path) if parent_path else root
        linear = getattr(parent, attribute)
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"{path} is {type(linear).__name__}, not nn.Linear")
        adapted = AdaptedLinear(linear, bottleneck)
        setattr(parent, attribute, adapted)
        adapters.append(adapted.adapter)
    return adapters


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return trainable, total
