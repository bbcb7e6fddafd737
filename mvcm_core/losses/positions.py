"""Where a finding lies: masked BCE on per-view position targets (side from the frontal, depth from the lateral).

An auxiliary beyond the five papers, like :mod:`~mvcm_core.losses.findings`: the targets come from
the phantom's placements and the report's sides (:mod:`mvcm_core.data.positions`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mvcm_core.losses._numerics import float32_math


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean BCE over the known entries (``mask``) of the rows whose view exists (``valid [B]``); 0 if none."""
    weights = mask.float() * valid.float().unsqueeze(-1)  # [B, K]
    losses = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    return (losses * weights).sum() / weights.sum().clamp_min(1.0)


class PositionsLoss(nn.Module):
    """``(side_logits [B, Ks], side_targets, side_mask, side_valid [B], depth_logits [B, Kd], ...) -> loss``.

    Returns ``positions_loss`` (side + depth) and the two parts as diagnostics.
    """

    def forward(self, side_logits: torch.Tensor, side_targets: torch.Tensor, side_mask: torch.Tensor,
                side_valid: torch.Tensor, depth_logits: torch.Tensor, depth_targets: torch.Tensor,
                depth_mask: torch.Tensor, depth_valid: torch.Tensor) -> dict[str, torch.Tensor]:
        for name, logits, targets, mask in (("side", side_logits, side_targets, side_mask),
                                            ("depth", depth_logits, depth_targets, depth_mask)):
            if not logits.shape == targets.shape == mask.shape:
                raise ValueError(f"{name} logits {tuple(logits.shape)}, targets {tuple(targets.shape)} and "
                                 f"mask {tuple(mask.shape)} differ")
        with float32_math(side_logits):
            side = masked_bce(side_logits, side_targets, side_mask, side_valid)
            depth = masked_bce(depth_logits, depth_targets, depth_mask, depth_valid)
        return {"positions_loss": side + depth, "positions_side": side.detach(), "positions_depth": depth.detach()}
