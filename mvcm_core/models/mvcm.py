"""The MVCM model: study-level multi-view image encoding, text encoding, co-attention fusion, heads.

Batch contract (from :mod:`mvcm_core.data.batching`):
    images [B, V, C, H, W], view_ids [B, V] (0 frontal, 1 lateral, 2 unknown), view_mask [B, V]
    (True = the view exists), input_ids / attention_mask [B, T], optionally text_states [B, T, H]
    (cached outputs of a frozen text encoder), mlm_input_ids / mlm_labels [B, T].

:meth:`MVCM.forward` returns a dict of named tensors whose keys are the losses' argument names;
it computes no loss (losses live in :mod:`mvcm_core.losses`, the weighted sum in the objective).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mvcm_core.config import POSITION_DEPTH_TERMS, POSITION_SIDE_TERMS, ModelCfg
from mvcm_core.models.fusion import CoAttentionFusion
from mvcm_core.models.heads import CellScoreHead, MIMDecoder, Projection, TiedMLMHead
from mvcm_core.models.text import TextEncoder
from mvcm_core.models.vision import ImageEncoder
from mvcm_core.models.vqa import VQAHead, position_evidence, position_validity, region_weights

NUM_VIEW_TYPES = 3


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean of ``x`` over ``dim`` where ``mask`` (broadcastable, bool) is True."""
    weights = mask.to(x.dtype)
    return (x * weights).sum(dim) / weights.sum(dim).clamp_min(1.0)


class MVCM(nn.Module):
    """Multi-view, cross-modality vision-language model (see the module docstring for the batch)."""

    def __init__(self, cfg: ModelCfg) -> None:
        super().__init__()
        self.cfg = cfg
        width, heads = cfg.fusion.width, cfg.heads
        self.vision = ImageEncoder(cfg.vision)
        self.text = TextEncoder(cfg.text)
        self.image_to_width = nn.Linear(self.vision.width, width)
        self.text_to_width = nn.Linear(self.text.width, width)
        self.view_embedding = nn.Embedding(NUM_VIEW_TYPES, width)
        self.missing_view_token = nn.Parameter(torch.randn(1, width) * 0.02)
        self.fusion_positions = None
        if cfg.fusion.image_positions:  # zeros: a model loaded without them behaves exactly as before
            tokens = self.vision.num_prefix_tokens + self.vision.num_patches
            self.fusion_positions = nn.Parameter(torch.zeros(1, 1, tokens, width))  # [1, 1, L, W]
        self.fusion = CoAttentionFusion(cfg.fusion)
        self.image_projection = Projection(self.vision.width, heads.embed_dim)
        self.text_projection = Projection(self.text.width, heads.embed_dim)
        self.image_token_projection = nn.Linear(width, heads.token_dim)
        self.text_token_projection = nn.Linear(width, heads.token_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(heads.init_logit_scale)))
        self.itm_head = nn.Linear(2 * width, 2)
        self.findings_head = nn.Linear(self.vision.width, heads.findings_classes) if heads.findings_classes else None
        self.side_head = self.depth_head = None
        if heads.position_heads:
            if cfg.vision.max_views < 2:
                raise ValueError("heads.position_heads needs a frontal and a lateral slot (vision.max_views >= 2)")
            cells = self.vision.num_patches
            self.side_head = CellScoreHead(self.vision.width, 2 * len(POSITION_SIDE_TERMS), cells)
            self.depth_head = CellScoreHead(self.vision.width, 2 * len(POSITION_DEPTH_TERMS), cells)
        self.mlm_positions = nn.Embedding(cfg.text.max_length, width)
        self.mlm_branch = CoAttentionFusion(cfg.fusion, layers=heads.mlm_layers, image_stream=False)
        self.mlm_head = TiedMLMHead(width, self.text.word_embeddings)
        self.vqa_head = None
        if heads.vqa_answers:
            regions = None
            if heads.vqa_regions:
                grid = round(self.vision.num_patches ** 0.5)
                regions = region_weights(cfg.vision.max_views, self.vision.num_prefix_tokens, grid, heads.vqa_regions)
            evidence_dim = 0
            if heads.vqa_evidence:
                if not heads.position_heads:
                    raise ValueError("heads.vqa_evidence reads the position heads: set heads.position_heads")
                evidence_dim = 2 * (len(POSITION_SIDE_TERMS) + len(POSITION_DEPTH_TERMS)) + 2
            self.vqa_head = VQAHead(width, len(heads.vqa_answers), cfg.fusion.heads, heads.vqa_gca, regions,
                                    evidence_dim, heads.vqa_evidence_pointer)
            self.register_buffer("vqa_prior_ids", torch.tensor(heads.vqa_prior_token_ids, dtype=torch.long),
                                 persistent=False)
        self.mim_decoder = None
        if self.vision.is_vit:
            patch_pixels = self.vision.patch_size**2 * cfg.vision.in_chans
            self.mim_decoder = MIMDecoder(self.vision.width, heads.mim_decoder_width, heads.mim_decoder_layers,
                                          self.vision.num_patches, patch_pixels)

    # ----------------------------------------------------------------------------------- images
    def _kept_positions(self, keep_ids: torch.Tensor | None, b: int, v: int, length: int) -> torch.Tensor:
        """The fusion positions of the tokens the encoder kept: ``[1, 1, L, W]``, or ``[B, V, L, W]`` under MIM."""
        positions = self.fusion_positions
        if keep_ids is None:
            return positions
        prefix = self.vision.num_prefix_tokens
        index = torch.cat([torch.arange(prefix, device=keep_ids.device).expand(keep_ids.shape[0], -1),
                           keep_ids + prefix], dim=1)  # [B*V, prefix + K]
        return positions[0, 0][index].view(b, v, length, -1)  # [B*V, L] -> [B, V, L, W]

    def random_keep(self, count: int, ratio: float, generator: torch.Generator | None = None,
                    device: torch.device | None = None, seeds: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random patch masking for ``count`` images: (keep_ids [M, K], ids_restore [M, N], mask [M, N]).

        ``seeds [M]`` (optional) makes each image's mask depend only on its own seed, so a sample
        gets the same mask whichever rank or batch position it lands on.
        """
        n = self.vision.num_patches
        keep = max(1, int(round(n * (1.0 - ratio))))
        if seeds is not None:
            noise = torch.stack([torch.rand(n, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
        else:
            noise = torch.rand(count, n, generator=generator)
        noise = noise.to(device)
        ids_shuffle = noise.argsort(dim=1)
        ids_restore = ids_shuffle.argsort(dim=1)
        mask = torch.ones(count, n, device=device)
        mask[:, :keep] = 0
        return ids_shuffle[:, :keep], ids_restore, torch.gather(mask, 1, ids_restore)

    def encode_study(self, images: torch.Tensor, view_ids: torch.Tensor, view_mask: torch.Tensor,
                     keep_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Encode every view and build the study-level token sequence.

        Returns image_embeds [B, E], study_features [B, Dv] (pooled views), findings_logits [B, F] (with a findings head), view_embeds [B, V, E], view_features [B, V, Dv],
        view_tokens [B*V, L, Dv] (raw encoder tokens), image_tokens [B, V*L, W] with
        image_token_mask [B, V*L], image_local [B, V*L, Dt] with image_local_mask (patches only).
        """
        b, v = images.shape[:2]
        tokens = self.vision(images.flatten(0, 1), keep_ids)  # [B*V, C, H, W] -> [B*V, L, Dv]
        length = tokens.shape[1]
        view_features = tokens[:, 0].view(b, v, -1)  # [B*V, Dv] -> [B, V, Dv]
        present = view_mask.unsqueeze(-1)  # [B, V, 1]
        pooled = masked_mean(view_features, present, 1)  # [B, Dv]
        image_embeds = F.normalize(self.image_projection(pooled), dim=-1)
        view_embeds = F.normalize(self.image_projection(view_features), dim=-1)
        study = self.image_to_width(tokens).view(b, v, length, -1)  # [B*V, L, W] -> [B, V, L, W]
        study = study + self.view_embedding(view_ids).unsqueeze(2)
        if self.fusion_positions is not None:
            study = study + self._kept_positions(keep_ids, b, v, length)
        missing = self.missing_view_token.to(study.dtype) + self.view_embedding(view_ids)  # [B, V, W]
        first = torch.where(present, study[:, :, 0], missing)  # absent views keep one learned token
        study = torch.cat([first.unsqueeze(2), study[:, :, 1:]], dim=2)
        token_mask = torch.zeros(b, v, length, dtype=torch.bool, device=images.device)
        token_mask[:, :, 0] = True
        token_mask[:, :, 1:] = view_mask.unsqueeze(-1)
        local_mask = token_mask.clone()
        local_mask[:, :, : self.vision.num_prefix_tokens] = False  # token alignment uses patches only
        image_tokens = study.flatten(1, 2)  # [B, V, L, W] -> [B, V*L, W]
        out = {
            "image_embeds": image_embeds, "study_features": pooled, "view_embeds": view_embeds, "view_features": view_features,
            "view_tokens": tokens, "image_tokens": image_tokens,
            "image_token_mask": token_mask.flatten(1, 2),  # [B, V, L] -> [B, V*L]
            "image_local": F.normalize(self.image_token_projection(image_tokens), dim=-1),
            "image_local_mask": local_mask.flatten(1, 2),
        }
        if self.findings_head is not None:
            out["findings_logits"] = self.findings_head(pooled)  # [B, findings]
        if self.side_head is not None and keep_ids is None:
            out.update(self._position_logits(tokens.view(b, v, length, -1), view_ids, view_mask))
        return out

    def _position_logits(self, tokens: torch.Tensor, view_ids: torch.Tensor, view_mask: torch.Tensor
                         ) -> dict[str, torch.Tensor]:
        """Side logits from the frontal slot's cells and depth logits from the lateral slot's, with validity."""
        cells = tokens[:, :, self.vision.num_prefix_tokens:]  # [B, V, L, Dv] -> [B, V, N, Dv]
        side_valid, depth_valid = position_validity(view_ids, view_mask)
        return {"side_logits": self.side_head(cells[:, 0]), "depth_logits": self.depth_head(cells[:, 1]),
                "side_valid": side_valid, "depth_valid": depth_valid}

    # ------------------------------------------------------------------------------------- text
    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    text_states: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """text_embeds [B, E], text_tokens [B, T, W], text_token_mask [B, T], text_local [B, T, Dt]."""
        if text_states is None:
            text_states = self.text(input_ids, attention_mask)  # [B, T, H]
        mask = attention_mask.bool()
        pooled = masked_mean(text_states, mask.unsqueeze(-1), 1)  # mean pooling, as MiniLM was trained
        tokens = self.text_to_width(text_states.to(self.text_to_width.weight.dtype))
        return {
            "text_embeds": F.normalize(self.text_projection(pooled.to(tokens.dtype)), dim=-1),
            "text_tokens": tokens, "text_token_mask": mask,
            "text_local": F.normalize(self.text_token_projection(tokens), dim=-1), "text_local_mask": mask,
        }

    # ----------------------------------------------------------------------------- task heads
    def fuse(self, text_tokens: torch.Tensor, text_mask: torch.Tensor, image_tokens: torch.Tensor,
             image_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Co-attention fusion of the two streams."""
        return self.fusion(text_tokens, text_mask, image_tokens, image_mask)

    def pooled_fusion(self, text_tokens: torch.Tensor, text_mask: torch.Tensor, image_tokens: torch.Tensor,
                      image_mask: torch.Tensor) -> torch.Tensor:
        """``[B, 2W]``: fused text [CLS] ⊕ masked mean of fused image tokens."""
        text_fused, image_fused = self.fuse(text_tokens, text_mask, image_tokens, image_mask)
        return torch.cat([text_fused[:, 0], masked_mean(image_fused, image_mask.unsqueeze(-1), 1)], dim=-1)

    def itm_logits(self, text_tokens: torch.Tensor, text_mask: torch.Tensor, image_tokens: torch.Tensor,
                   image_mask: torch.Tensor) -> torch.Tensor:
        """Image–text matching logits ``[M, 2]`` (index 1 = match) for M aligned pairs."""
        return self.itm_head(self.pooled_fusion(text_tokens, text_mask, image_tokens, image_mask))

    def mlm_logits(self, mlm_input_ids: torch.Tensor, attention_mask: torch.Tensor, image_tokens: torch.Tensor,
                   image_mask: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Image-conditioned MLM from masked ids (word embeddings, never cached contextual states).

        Returns ``[B, T, vocab]``, or ``[1, S, vocab]`` for the S positions selected by the boolean
        ``positions [B, T]`` (scoring only masked tokens saves most of the vocabulary projection).
        """
        words = self.text.word_embeddings(mlm_input_ids)  # [B, T, H]
        index = torch.arange(mlm_input_ids.shape[1], device=mlm_input_ids.device)
        hidden = self.text_to_width(words) + self.mlm_positions(index)
        hidden, _ = self.mlm_branch(hidden, attention_mask.bool(), image_tokens, image_mask)
        if positions is not None:
            hidden = hidden[positions].unsqueeze(0)  # [B, T, W] -> [1, S, W]
        return self.mlm_head(hidden)

    def vqa_logits(self, batch: dict[str, torch.Tensor], study: dict[str, torch.Tensor] | None = None,
                   return_pointer: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """Answer logits ``[Q, A]`` for questions (``input_ids`` / ``attention_mask``) about studies.

        With ``study_index [Q]`` the images are the ``S`` distinct studies of the batch and each
        question reads its study's tokens (every study is encoded once however many questions it has).
        ``study`` is :meth:`encode_study` of the batch's images when the caller already has it.
        ``return_pointer`` also returns the evidence pointer's logits ``[Q, K + 1]`` (None without one).
        """
        if self.vqa_head is None:
            raise ValueError("this model has no VQA head (set heads.vqa_answers)")
        if study is None:
            study = self.encode_study(batch["images"], batch["view_ids"], batch["view_mask"].bool())
        evidence = None
        if self.vqa_head.evidence is not None:
            evidence = position_evidence(study["side_logits"], study["side_valid"], study["depth_logits"],
                                         study["depth_valid"])  # [S, E]
        if "study_index" in batch:
            index = batch["study_index"]
            study = {k: study[k].index_select(0, index) for k in ("image_tokens", "image_token_mask")}
            evidence = None if evidence is None else evidence.index_select(0, index)  # [S, E] -> [Q, E]
        text = self.encode_text(batch["input_ids"], batch["attention_mask"], batch.get("text_states"))
        text_fused, image_fused = self.fuse(text["text_tokens"], text["text_token_mask"], study["image_tokens"],
                                            study["image_token_mask"])
        prior = None
        if self.vqa_head.gca is not None:
            prior = self.text_to_width(self.text.word_embeddings(self.vqa_prior_ids))  # [A_w, W]
        return self.vqa_head(text_fused, text["text_token_mask"], image_fused, study["image_token_mask"], prior,
                             evidence=evidence, return_pointer=return_pointer)

    # ---------------------------------------------------------------------------------- forward
    def forward(self, batch: dict[str, torch.Tensor], tasks: frozenset[str] = frozenset(),
                mask_ratio: float = 0.0, generator: torch.Generator | None = None,
                keep_seeds: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Encode a batch for the requested tasks (``mlm``, ``mim``); see the module docstring.

        Args:
            batch: the batch dict.
            tasks: extra branches to run: ``mlm`` and / or ``mim``.
            mask_ratio: share of patches dropped in every view (FLIP / ALTA); MIM predicts them.
            generator: randomness of the patch masks.
            keep_seeds: ``[B]`` per-sample seeds; when given they alone decide the patch masks.
        """
        images, view_mask = batch["images"], batch["view_mask"].bool()
        b, v = images.shape[:2]
        keep_ids = ids_restore = patch_mask = None
        if mask_ratio > 0 or "mim" in tasks:
            if self.mim_decoder is None:
                raise ValueError("masked image modelling needs a ViT image encoder")
            seeds = None if keep_seeds is None else (keep_seeds.long()[:, None] * 16 + torch.arange(v)).flatten()
            keep_ids, ids_restore, patch_mask = self.random_keep(b * v, max(mask_ratio, 1e-6), generator,
                                                                 images.device, seeds)
        out = self.encode_study(images, batch["view_ids"], view_mask, keep_ids)
        out.update(self.encode_text(batch["input_ids"], batch["attention_mask"], batch.get("text_states")))
        out["view_mask"] = view_mask
        out["logit_scale"] = self.logit_scale.exp().clamp(max=100.0)
        if "mlm" in tasks:
            selected = batch["mlm_labels"] != -100
            out["mlm_logits"] = self.mlm_logits(batch["mlm_input_ids"], batch["attention_mask"],
                                                out["image_tokens"], out["image_token_mask"], selected)
            out["mlm_labels"] = batch["mlm_labels"][selected].unsqueeze(0)  # [B, T] -> [1, S]
        if "mim" in tasks:
            prefix = self.vision.num_prefix_tokens
            out["mim_pred"] = self.mim_decoder(out["view_tokens"][:, prefix:], ids_restore)
            out["mim_target"] = self.vision.patchify(images.flatten(0, 1))  # [B*V, N, p*p*C]
            out["mim_mask"] = patch_mask * view_mask.flatten().unsqueeze(-1).to(patch_mask.dtype)
        return out
