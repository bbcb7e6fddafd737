"""Cross-rank helpers for the losses: gather with gradients, gather labels, sum reductions.

Every helper is the identity (or a no-op) when ``torch.distributed`` is not initialised or the
world has a single rank, so the losses run unchanged in a plain Python process.

Gradient convention (the one DistributedDataParallel expects): every rank computes the *global*
loss from the gathered tensors; the backward of :func:`gather_with_grad` sums, over ranks, the
gradient that each rank's copy of the loss sends to a rank's local rows. A rank's local input
gradient is therefore ``world_size`` times the gradient of the single-process global loss, and
DDP's gradient averaging divides it back: parameter gradients equal the single-process ones.
Ranks may hold different batch sizes (a last, smaller batch): tensors are padded for the
collective and the padding is dropped again.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    """Number of ranks, 1 when ``torch.distributed`` is unavailable or not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def rank() -> int:
    """This process's rank, 0 when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def _gather_rows(x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """All-gather ``x [n_r, ...]`` from every rank (any n_r); returns ``[sum n_r, ...]`` and the sizes."""
    n_ranks = world_size()
    size = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(n_ranks)]
    dist.all_gather(sizes, size)
    row_counts = [int(s.item()) for s in sizes]
    longest = max(row_counts)
    # gloo has no bool collectives: move bools through uint8
    payload = x.to(torch.uint8) if x.dtype == torch.bool else x
    padded = payload.new_zeros((longest, *x.shape[1:]))
    padded[: x.shape[0]] = payload
    buffers = [torch.empty_like(padded) for _ in range(n_ranks)]
    dist.all_gather(buffers, padded.contiguous())
    gathered = torch.cat([buf[:count] for buf, count in zip(buffers, row_counts)])  # [sum n_r, ...]
    return gathered.to(x.dtype), row_counts


class _GatherWithGrad(torch.autograd.Function):
    """All-gather rows in forward; in backward sum the global gradient over ranks, keep local rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102 - documented on the class
        gathered, row_counts = _gather_rows(x)
        ctx.row_start = sum(row_counts[: rank()])
        ctx.row_count = x.shape[0]
        return gathered

    @staticmethod
    def backward(ctx, grad_gathered: torch.Tensor) -> torch.Tensor:  # noqa: D102
        grad_gathered = grad_gathered.contiguous().clone()
        dist.all_reduce(grad_gathered, op=dist.ReduceOp.SUM)
        return grad_gathered[ctx.row_start : ctx.row_start + ctx.row_count]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x [n_r, ...]`` of every rank in rank order, keeping gradients.

    Returns:
        ``[sum_r n_r, ...]``; ``x`` itself when not distributed.
    """
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Like :func:`gather_with_grad` for labels, masks and teacher inputs (no gradient, any dtype)."""
    if world_size() == 1:
        return x
    with torch.no_grad():
        return _gather_rows(x.detach())[0]


def all_reduce_sum_(x: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (no gradient); returns ``x``."""
    if world_size() > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def all_reduce_max_(x: torch.Tensor) -> torch.Tensor:
    """In-place max over ranks (no gradient); returns ``x``."""
    if world_size() > 1:
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x
