"""Report-finding supervision of the image side: multi-label BCE on the findings parsed from the report.

Not one of the five papers' losses: an auxiliary that MedCLIP / KAD-style systems use in spirit
(labels extracted from the report supervise the image encoder). From scratch on 2 CPU cores the
contrastive objectives alone sat at chance (the image tower collapses to a constant embedding before
it learns any feature); this term gives the image encoder a dense signal from the first step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mvcm_core.losses._numerics import float32_math


class FindingsLoss(nn.Module):
    """``(findings_logits [B, L], labels [B, L] in {0, 1}) -> {"findings_loss": mean BCE}``.

    Args:
        pos_weight: weight of positive labels (rare findings); 1.0 = plain BCE.
    """

    def __init__(self, pos_weight: float = 1.0) -> None:
        super().__init__()
        self.pos_weight = float(pos_weight)

    def forward(self, findings_logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if findings_logits.shape != labels.shape:
            raise ValueError(f"findings logits {tuple(findings_logits.shape)} and labels {tuple(labels.shape)} differ")
        with float32_math(findings_logits):
            weight = torch.tensor(self.pos_weight, device=labels.device)
            loss = F.binary_cross_entropy_with_logits(findings_logits.float(), labels.float(), pos_weight=weight)
        return {"findings_loss": loss}
