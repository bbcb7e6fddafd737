"""Alignment and reconstruction objectives of the five papers, each a standalone ``nn.Module``.

Every loss takes tensors only and returns ``{"<name>_loss": scalar, ...}``; keys that do not end in
``_loss`` are diagnostics. The training objective is the weighted sum of the ``*_loss`` entries.

| short name | class | output key |
| --- | --- | --- |
| ``itc``, ``inter_view`` | :class:`ContrastiveLoss` | ``<short name>_loss`` |
| ``soft_itc``, ``soft_inter_view``, ``soft_intra_text`` | :class:`SoftLabelContrastiveLoss` | the same |
| ``token_align`` | :class:`TokenAlignLoss` | ``token_align_loss`` |
| ``ot_align`` | :class:`OTAlignLoss` | ``ot_align_loss`` |
| ``proto`` | :class:`PrototypeLoss` | ``proto_loss`` |
| ``mlm`` / ``mim`` | :class:`MLMLoss` / :class:`MIMLoss` | ``mlm_loss`` / ``mim_loss`` |
| ``itm`` | :class:`ITMLoss` | ``itm_loss`` |
| ``findings`` | :class:`FindingsLoss` | ``findings_loss`` (auxiliary, not from the papers) |
| ``positions`` | :class:`PositionsLoss` | ``positions_loss`` (auxiliary: side from the frontal, depth from the lateral) |
"""

from __future__ import annotations

from typing import Any

from torch import nn

from mvcm_core.losses.contrastive import ContrastiveLoss, contrastive_targets
from mvcm_core.losses.distributed import gather_no_grad, gather_with_grad
from mvcm_core.losses.findings import FindingsLoss
from mvcm_core.losses.itm import ITMLoss, sample_hard_negatives
from mvcm_core.losses.masked_modeling import (
    IGNORE_INDEX,
    MIMLoss,
    MLMLoss,
    mask_tokens,
    patchify,
    random_patch_mask,
    unpatchify,
)
from mvcm_core.losses.optimal_transport import OTAlignLoss, emd_plan, ipot_plan, sinkhorn_plan
from mvcm_core.losses.positions import PositionsLoss
from mvcm_core.losses.prototype import PrototypeLoss, sinkhorn_knopp
from mvcm_core.losses.soft_label import (
    SoftLabelContrastiveLoss,
    embedding_teacher_logits,
    findings_teacher_logits,
)
from mvcm_core.losses.token_align import TokenAlignLoss, clipped_token_weights

LOSS_REGISTRY: dict[str, type[nn.Module]] = {
    "itc": ContrastiveLoss,
    "inter_view": ContrastiveLoss,
    "soft_itc": SoftLabelContrastiveLoss,
    "soft_inter_view": SoftLabelContrastiveLoss,
    "soft_intra_text": SoftLabelContrastiveLoss,
    "token_align": TokenAlignLoss,
    "ot_align": OTAlignLoss,
    "proto": PrototypeLoss,
    "mlm": MLMLoss,
    "mim": MIMLoss,
    "itm": ITMLoss,
    "findings": FindingsLoss,
    "positions": PositionsLoss,
}

# classes shared by several short names take the short name as their `name` (the output key prefix)
_NAMED = (ContrastiveLoss, SoftLabelContrastiveLoss)


def create_loss(short_name: str, **kwargs: Any) -> nn.Module:
    """Build the loss registered under ``short_name``; its output key is ``f"{short_name}_loss"``.

    Example:
        >>> create_loss("inter_view", label_smoothing=0.1)(a, b, scale)  # {"inter_view_loss": ...}
    """
    try:
        cls = LOSS_REGISTRY[short_name]
    except KeyError:
        raise KeyError(f"unknown loss {short_name!r}; known: {sorted(LOSS_REGISTRY)}") from None
    if cls in _NAMED:
        kwargs.setdefault("name", short_name)
    return cls(**kwargs)


__all__ = [
    "IGNORE_INDEX",
    "LOSS_REGISTRY",
    "ContrastiveLoss",
    "FindingsLoss",
    "ITMLoss",
    "MIMLoss",
    "MLMLoss",
    "OTAlignLoss",
    "PositionsLoss",
    "PrototypeLoss",
    "SoftLabelContrastiveLoss",
    "TokenAlignLoss",
    "clipped_token_weights",
    "contrastive_targets",
    "create_loss",
    "embedding_teacher_logits",
    "emd_plan",
    "findings_teacher_logits",
    "gather_no_grad",
    "gather_with_grad",
    "ipot_plan",
    "mask_tokens",
    "patchify",
    "random_patch_mask",
    "sample_hard_negatives",
    "sinkhorn_knopp",
    "sinkhorn_plan",
    "unpatchify",
]
