"""Numerical helpers shared by the losses: float32 islands under autocast, grad-safe zeros."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

# A finite stand-in for -inf in float32 logits: exp() of it is exactly 0, and a row made only of
# it stays finite (uniform softmax) instead of turning into NaN.
MASKED_LOGIT = -1.0e4


@contextmanager
def float32_math(reference: torch.Tensor) -> Iterator[None]:
    """Disable autocast on ``reference``'s device so the enclosed ops run in the dtype they are given."""
    with torch.autocast(device_type=reference.device.type, enabled=False):
        yield


def grad_safe_zero(*tensors: torch.Tensor) -> torch.Tensor:
    """A float32 scalar 0 connected to the graph of ``tensors`` (backward gives zero gradients)."""
    return sum((t.float().sum() * 0.0 for t in tensors), torch.zeros((), device=tensors[0].device))

