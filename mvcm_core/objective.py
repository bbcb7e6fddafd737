"""The pretraining objective: every loss of the five papers as a switch with a weight.

``PretrainTask(model, loss_cfg)`` runs the model and the enabled losses in one ``forward`` (so
``DistributedDataParallel`` can wrap the whole step) and returns every ``*_loss`` term plus
``loss``, their weighted sum. A loss with weight 0 (or absent from the config) is never computed.

Config, e.g.::

    {"itc": {"weight": 1.0, "label_smoothing": 0.1}, "soft_itc": {"weight": 0.5, "flex_weight": 0.01},
     "inter_view": {"weight": 0.5}, "token_align": {"weight": 0.5}, "ot_align": {"weight": 0.5},
     "proto": {"weight": 0.2, "num_prototypes": 64}, "mlm": {"weight": 1.0}, "mim": {"weight": 1.0},
     "itm": {"weight": 1.0}}
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mvcm_core.data.findings import CANONICAL_TERMS
from mvcm_core.losses import create_loss, sample_hard_negatives
from mvcm_core.losses.distributed import all_reduce_sum_, gather_no_grad, gather_with_grad, rank, world_size

OWN_TEMPERATURE = ("inter_view", "soft_inter_view", "soft_intra_text")
LOSS_NAMES = ("itc", "inter_view", "soft_itc", "soft_inter_view", "soft_intra_text", "token_align", "ot_align",
              "proto", "mlm", "mim", "itm", "findings", "positions")


def _build_loss(name: str, params: dict[str, Any], embed_dim: int) -> nn.Module:
    if name in ("soft_itc", "soft_inter_view", "soft_intra_text"):
        params.setdefault("normal_index", CANONICAL_TERMS.index("normal"))  # label-free reports count as normal
    if name == "proto":
        return create_loss(name, embed_dim=embed_dim, **params)
    return create_loss(name, **params)


class PretrainTask(nn.Module):
    """Model + enabled losses; ``forward(batch, step)`` → dict of ``*_loss`` terms and ``loss``."""

    def __init__(self, model: nn.Module, loss_cfg: dict[str, dict[str, Any]], *, mask_ratio: float = 0.0,
                 seed: int = 0) -> None:
        super().__init__()
        unknown = set(loss_cfg) - set(LOSS_NAMES)
        if unknown:
            raise ValueError(f"unknown losses {sorted(unknown)}; known: {', '.join(LOSS_NAMES)}")
        self.model = model
        self.weights: dict[str, float] = {}
        self.losses = nn.ModuleDict()
        for name in LOSS_NAMES:
            params = dict(loss_cfg.get(name) or {})
            weight = float(params.pop("weight", 0.0))
            if weight > 0:
                self.weights[name] = weight
                self.losses[name] = _build_loss(name, params, model.cfg.heads.embed_dim)
        if not self.weights:
            raise ValueError("every loss is switched off")
        if "findings" in self.weights and getattr(model, "findings_head", None) is None:
            raise ValueError("the findings loss needs a findings head (heads.findings_classes > 0)")
        if "positions" in self.weights and getattr(model, "side_head", None) is None:
            raise ValueError("the positions loss needs position heads (heads.position_heads: true)")
        if "positions" in self.weights and mask_ratio > 0:
            raise ValueError("the positions loss reads every cell: it needs train.mask_ratio 0")
        if "mim" in self.weights and mask_ratio <= 0:
            raise ValueError("the mim loss needs train.mask_ratio > 0 (patches to predict)")
        self.mask_ratio, self.seed = mask_ratio, seed
        # each alignment has its own learnable temperature (AMiF's tau_1..tau_3, MVCM's inter-view tau_1);
        # image–text losses share the model's logit scale, which serving uses
        init = float(model.cfg.heads.init_logit_scale)
        self.log_scales = nn.ParameterDict({name: nn.Parameter(torch.tensor(init)) for name in self.weights
                                            if name in OWN_TEMPERATURE})

    @property
    def tasks(self) -> frozenset[str]:
        """Model branches the enabled losses need."""
        return frozenset(name for name in ("mlm", "mim") if name in self.weights)

    def forward(self, batch: dict[str, torch.Tensor], step: int = 0) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        out = self.model(batch, self.tasks, mask_ratio=self.mask_ratio, generator=generator,
                         keep_seeds=batch.get("sample_seeds"))
        terms: dict[str, torch.Tensor] = {}
        for name in self.weights:
            terms.update(self._term(name, out, batch, generator))
        total = sum(self.weights[name] * terms[f"{name}_loss"] for name in self.weights)
        terms["loss"] = total
        terms["logit_scale"] = out["logit_scale"].detach()
        return terms

    def _term(self, name: str, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
              generator: torch.Generator) -> dict[str, torch.Tensor]:
        loss = self.losses[name]
        labels = batch.get("teacher_labels", batch.get("labels"))  # (term, side) overlap when available
        scale = self.log_scales[name].exp().clamp(max=100.0) if name in self.log_scales else out["logit_scale"]
        two_views = out["view_mask"][:, :2].all(dim=1) if out["view_mask"].shape[1] >= 2 else None
        if name == "itc":
            return loss(out["image_embeds"], out["text_embeds"], scale, positive_groups=batch.get("group_ids"))
        if name == "inter_view":
            return loss(out["view_embeds"][:, 0], out["view_embeds"][:, 1], scale, valid=two_views)
        if name == "soft_itc":
            return loss(out["image_embeds"], out["text_embeds"], scale, teacher_labels=labels)
        if name == "soft_inter_view":
            return loss(out["view_embeds"][:, 0], out["view_embeds"][:, 1], scale, valid=two_views,
                        teacher_labels=labels)
        if name == "soft_intra_text":
            return loss(out["text_embeds"], out["text_embeds"], scale, teacher_labels=labels)
        if name == "token_align":
            return loss(out["text_local"], _real_words(out, batch), out["image_local"], out["image_local_mask"])
        if name == "ot_align":
            return loss(out["text_local"], _real_words(out, batch), out["image_local"], out["image_local_mask"])
        if name == "proto":
            return loss(out["image_embeds"], out["text_embeds"])
        if name == "mlm":
            return _global_mean(loss(out["mlm_logits"], out["mlm_labels"]), "mlm_loss",
                                (out["mlm_labels"] != -100).sum())
        if name == "findings":
            return loss(out["findings_logits"], batch["labels"])
        if name == "positions":
            return loss(out["side_logits"], batch["side_targets"], batch["side_mask"], out["side_valid"],
                        out["depth_logits"], batch["depth_targets"], batch["depth_mask"], out["depth_valid"])
        if name == "mim":
            return _global_mean(loss(out["mim_pred"], out["mim_target"], out["mim_mask"]), "mim_loss",
                                out["mim_mask"].sum())
        return self._itm(out, batch, generator)

    def _itm(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
             generator: torch.Generator) -> dict[str, torch.Tensor]:
        """ITM on positives and similarity-sampled hard negatives from the (gathered) batch."""
        image_embeds, text_embeds = gather_no_grad(out["image_embeds"]), gather_no_grad(out["text_embeds"])
        similarity = image_embeds @ text_embeds.t()  # [Bg, Bg]
        false_negative = _same_findings(batch, similarity.shape[0])
        local = out["image_embeds"].shape[0]
        offset = rank() * local
        rows = torch.arange(offset, offset + local)
        text_for_image, _ = sample_hard_negatives(similarity, false_negative, generator=generator)
        image_for_text, _ = sample_hard_negatives(similarity.t(), false_negative.t(), generator=generator)
        texts, text_mask = gather_with_grad(out["text_tokens"]), gather_no_grad(out["text_token_mask"])
        images, image_mask = gather_with_grad(out["image_tokens"]), gather_no_grad(out["image_token_mask"])
        pick_text, pick_image = text_for_image[rows], image_for_text[rows]
        all_texts = torch.cat([out["text_tokens"], texts[pick_text], out["text_tokens"]])
        all_text_mask = torch.cat([out["text_token_mask"], text_mask[pick_text], out["text_token_mask"]])
        all_images = torch.cat([out["image_tokens"], out["image_tokens"], images[pick_image]])
        all_image_mask = torch.cat([out["image_token_mask"], out["image_token_mask"], image_mask[pick_image]])
        logits = self.model.itm_logits(all_texts, all_text_mask, all_images, all_image_mask)  # [3B, 2]
        itm_labels = torch.cat([torch.ones(local), torch.zeros(2 * local)]).long()
        return self.losses["itm"](logits, itm_labels)


def _global_mean(result: dict[str, torch.Tensor], key: str, local_count: torch.Tensor) -> dict[str, torch.Tensor]:
    """Turn a per-rank mean over ``local_count`` items into this rank's share of the global mean.

    Averaged over ranks (as DDP averages gradients and the logger averages values), the rescaled
    losses give exactly the mean over all items of the global batch, however unevenly they fall.
    """
    if world_size() > 1:
        local = local_count.detach().float()
        total = all_reduce_sum_(local.clone()).clamp_min(1.0)
        result[key] = result[key] * local * world_size() / total
    return result


def _real_words(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Text positions that are words: attention mask minus special tokens ([CLS], [SEP])."""
    mask = out["text_local_mask"]
    special = batch.get("special_tokens_mask")
    return mask & ~special.bool() if special is not None else mask


def _same_findings(batch: dict[str, torch.Tensor], global_size: int) -> torch.Tensor:
    """``[Bg, Bg]`` True where two studies cannot be negatives: same report group or same findings."""
    mask = torch.zeros(global_size, global_size, dtype=torch.bool)
    if batch.get("group_ids") is not None:
        groups = gather_no_grad(batch["group_ids"])
        mask |= groups[:, None] == groups[None, :]
    fine = batch.get("teacher_labels", batch.get("labels"))
    if fine is not None:
        labels = gather_no_grad(fine.float())
        mask |= (labels[:, None, :] == labels[None, :, :]).all(dim=-1)
    return mask
