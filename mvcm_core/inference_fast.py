"""The optimised inference path behind :class:`~mvcm_core.inference.Predictor` (``optimize=True``).

Same weights and the same answers, probabilities and retrieved reports as the plain eager fp32 path
within floating-point tolerance (tests and ``benchmarks/bench_accuracy.py`` check it); what changes
is the work done per study (figures and what did not win: ``PERFORMANCE.md``):

- every view goes through the image encoder once, as one batch; the plain path encodes the study
  once per row (all views, then once without each view for the view contributions) and again for
  retrieval;
- the question goes through the text encoder once and is shared by every row;
- the gated cross-attention's answer-vocabulary prior is the same for every input: its keys and
  values are computed once at load time;
- a row that leaves a view out drops that view's masked tokens instead of masking them (masked
  tokens never reach an unmasked output, so the result is the same with half the tokens), and no
  attention mask is built when every token is real; the head's gated cross-attention, token by token, also runs on the
  kept tokens only, before region pooling puts them back in the full layout;
- bf16 weights and activations where the CPU computes bf16 natively (AVX-512 BF16 or AMX), fp32
  elsewhere; ``MVCM_PRECISION=fp32|bf16`` overrides the choice;
- in bf16, every weight reordered once for oneDNN, with the GELU / ReLU / residual add after it fused
  into the same call (:mod:`mvcm_core.prepack`);
- a convolutional tower has its batch norms folded into the preceding convolutions and runs
  channels-last (oneDNN's native layout; PyTorch's NCHW max-pool alone took 1.5 ms per study);
- the input buffer is allocated once and refilled under the Predictor's lock;
- a question asked again (a class working through the same questions, the app's examples) reuses its
  encoded tokens: the last ``question_cache`` single questions are kept, keyed by their token ids;
- engine ``onnxruntime`` (the default for an fp32 path where it is installed, :func:`resolve_engine`;
  ``MVCM_ENGINE=torch|onnxruntime`` overrides): the image encoder, the text encoder and the fusion
  with the prior run as ONNX Runtime sessions exported from the model at load time
  (:mod:`mvcm_core.inference_ort`); the options above are then off.
"""

from __future__ import annotations

import copy
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mvcm_core.config import VIEW_IDS, VIEW_OF_LABEL
from mvcm_core.data.batching import order_views
from mvcm_core.inference_ort import OrtStages, onnxruntime_available
from mvcm_core.models.vqa import position_evidence, position_validity
from mvcm_core.prepack import (
    fold_batch_norms,
    keep_channels_last,
    pack_linears,
    pack_resnet,
    prepack_supported,
)

PRECISIONS = ("auto", "fp32", "bf16")
ENGINES = ("auto", "torch", "onnxruntime")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def native_bf16_supported() -> bool:
    """True when oneDNN can run bf16 and the CPU has native bf16 instructions (Linux ``/proc/cpuinfo``)."""
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return False
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return False
    flags = set()
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def resolve_precision(precision: str = "auto") -> str:
    """``fp32`` or ``bf16``: ``auto`` (or ``$MVCM_PRECISION``) picks bf16 only where it is native."""
    precision = os.environ.get("MVCM_PRECISION", precision) if precision == "auto" else precision
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16_supported() else "fp32"
    return precision


def resolve_engine(engine: str = "auto", precision: str = "auto") -> str:
    """``torch`` or ``onnxruntime``; ``auto`` (or ``$MVCM_ENGINE``) picks by the precision the path will use.

    bf16 (native, or asked for) runs in PyTorch: ONNX Runtime's CPU kernels compute in fp32. An fp32
    path runs in ONNX Runtime where it is installed, which measured as fast as PyTorch in fp32 on 2
    threads and 1.36× faster on one (``PERFORMANCE.md``).
    """
    engine = os.environ.get("MVCM_ENGINE", engine) if engine == "auto" else engine
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    bf16 = resolve_precision(precision) == "bf16"
    if engine == "auto":
        return "onnxruntime" if onnxruntime_available() and not bf16 else "torch"
    if engine == "onnxruntime" and bf16 and precision != "auto":
        raise ValueError("the onnxruntime engine computes in fp32; use engine='torch' for bf16")
    return engine


@dataclass
class StudyEncoding:
    """One study, encoded once: what answering and retrieval both need (fp32 except ``image_tokens``)."""

    image_embeds: torch.Tensor  # [1, E], L2-normalised
    study_features: torch.Tensor  # [1, Dv], the pooled view features (OOD)
    image_tokens: torch.Tensor  # [V*L + V, W], model dtype: every view's tokens, then each view's missing-view token
    token_valid: torch.Tensor  # [V, L] bool
    view_ids: torch.Tensor  # [V]
    position_logits: tuple[torch.Tensor, torch.Tensor] | None = None  # side [2S] (frontal slot), depth [2D] (lateral)


class FastPath:
    """The optimised forward passes of one model (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, precision: str = "auto", channels_last: bool | None = None,
                 merge_rows: bool = False, prepack: bool = True, engine: str = "auto",
                 question_cache: int = 256) -> None:
        """Prepare ``model`` (a bf16 copy when bf16 is chosen; the caller's model is never altered).

        A convolutional tower always has its batch norms folded. ``channels_last`` defaults to True for
        it and False for a ViT, where it was measured not to win; ``merge_rows`` (one padded fusion pass
        for every row) did not win either (``PERFORMANCE.md``); both stay for re-measuring. ``prepack``:
        bf16 weights reordered once for oneDNN, with their activations fused (:mod:`mvcm_core.prepack`).
        ``engine``: see :func:`resolve_engine`; with ``onnxruntime`` the path computes in fp32 and the
        model is used as it is (ONNX Runtime folds the batch norms itself). ``question_cache``: how many
        encoded single questions to keep (0: none).
        """
        self.engine = resolve_engine(engine, precision)
        if self.engine == "onnxruntime":
            precision, channels_last, prepack = "fp32", False, False
        self.precision = resolve_precision(precision)
        self.dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        convolutional = not model.vision.is_vit
        self.channels_last = convolutional if channels_last is None else channels_last
        own_copy = (self.dtype != torch.float32 or self.channels_last or convolutional) and self.engine == "torch"
        self.model = copy.deepcopy(model) if own_copy else model
        self.model.eval()
        if convolutional and own_copy:
            fold_batch_norms(self.model.vision.trunk)  # in fp32, before the cast
        self.model.to(self.dtype)
        self.cfg = model.cfg
        self.merge_rows = merge_rows
        if self.channels_last:
            self.model.vision.to(memory_format=torch.channels_last)
            if convolutional:
                keep_channels_last(self.model.vision.trunk)
        self.prepacked = prepack and prepack_supported(self.dtype)
        if self.prepacked:
            pack_linears(self.model)
            if convolutional:
                pack_resnet(self.model.vision.trunk)
        size, channels, views = self.cfg.preprocess.image_size, self.cfg.vision.in_chans, self.cfg.vision.max_views
        self._images = torch.zeros(views, channels, size, size)  # refilled per request (under the caller's lock)
        self.prior_kv = None
        head = model.vqa_head
        if head is not None and head.gca is not None:
            with torch.inference_mode():  # from the fp32 model, then cast: the prior is computed once
                prior = model.text_to_width(model.text.word_embeddings(model.vqa_prior_ids))  # [A_w, W]
                k, v = head.gca.prior_keys_values(prior)
                self.prior_kv = (k.to(self.dtype).contiguous(), v.to(self.dtype).contiguous())
        self.ort = OrtStages(self.model, self.prior_kv) if self.engine == "onnxruntime" else None
        self.question_cache = question_cache
        self._questions: OrderedDict[bytes, tuple[torch.Tensor, torch.Tensor | None]] = OrderedDict()

    # ------------------------------------------------------------------------------- inputs
    def inputs(self, views: list[np.ndarray], labels: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``images [V, C, H, W]`` (the reused buffer), ``view_ids [V]`` and ``view_mask [V]`` of one study."""
        pre, v = self.cfg.preprocess, self.cfg.vision.max_views
        view_ids = torch.full((v,), VIEW_IDS["unknown"], dtype=torch.long)
        view_mask = torch.zeros(v, dtype=torch.bool)
        self._images.zero_()
        scale, shift = 1.0 / (255.0 * pre.std), pre.mean / pre.std
        for slot, index in enumerate(order_views(labels, v)):
            if index is None:
                view_ids[slot] = VIEW_IDS[("frontal", "lateral")[slot] if slot < 2 else "unknown"]
                continue
            pixels = torch.from_numpy(np.ascontiguousarray(views[index]))  # [H, W] uint8
            self._images[slot].copy_(pixels.unsqueeze(0))  # [H, W] -> [C, H, W]
            view_ids[slot] = VIEW_IDS[VIEW_OF_LABEL.get(labels[index], "unknown")]
            view_mask[slot] = True
        self._images.mul_(scale).sub_(shift)  # (x / 255 - mean) / std, in place
        return self._images, view_ids, view_mask

    # ------------------------------------------------------------------------------ encoders
    def encode_study(self, images: torch.Tensor, view_ids: torch.Tensor, view_mask: torch.Tensor) -> StudyEncoding:
        """Every present view through the image encoder once; absent views keep their learned token."""
        model = self.model
        present = view_mask.nonzero().flatten()
        v, length = view_mask.shape[0], model.vision.num_prefix_tokens + model.vision.num_patches
        pixels = images[present].to(self.dtype)  # [P, C, H, W]
        if self.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        tokens = model.vision(pixels) if self.ort is None else self.ort.vision(pixels)  # [P, L, Dv]
        pooled = tokens[:, 0].float().mean(0, keepdim=True)  # [1, Dv]: mean of the present views' [CLS]
        image_embeds = torch.nn.functional.normalize(model.image_projection(pooled.to(self.dtype)).float(), dim=-1)
        width = model.image_to_width.out_features
        embedded = model.view_embedding(view_ids)  # [V, W]
        missing = embedded + model.missing_view_token.to(self.dtype)  # [V, W]: a view's learned stand-in
        study = missing.unsqueeze(1).repeat(1, length, 1)  # [V, W] -> [V, L, W]
        fresh = model.image_to_width(tokens) + embedded[present].unsqueeze(1)  # [P, L, W]
        if model.fusion_positions is not None:
            fresh = fresh + model.fusion_positions[0, 0]  # [L, W], shared by the views
        study[present] = fresh
        valid = torch.zeros(v, length, dtype=torch.bool)
        valid[:, 0] = True
        valid[present] = True
        table = torch.cat([study.view(v * length, width), missing])  # [V, L, W] -> [V*L + V, W]
        positions = None
        if model.vqa_head is not None and model.vqa_head.evidence is not None:
            positions = self._position_logits(tokens, view_mask)
        return StudyEncoding(image_embeds, pooled, table, valid, view_ids, positions)

    def _position_logits(self, tokens: torch.Tensor, view_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The side head on the frontal slot's cells and the depth head on the lateral slot's (zeros if absent)."""
        model, prefix = self.model, self.model.vision.num_prefix_tokens
        rank = view_mask.long().cumsum(0) - 1  # slot -> its row in the present views' tokens
        outputs = []
        for slot, head in ((0, model.side_head), (1, model.depth_head)):
            if bool(view_mask[slot]):
                outputs.append(head(tokens[rank[slot], prefix:].unsqueeze(0)).float()[0])  # [N, Dv] -> [K]
            else:
                outputs.append(torch.zeros(head.where.shape[1]))  # [K]
        return outputs[0], outputs[1]

    @staticmethod
    def row_evidence(study: StudyEncoding, drops: list[int | None]) -> torch.Tensor | None:
        """The position evidence ``[R, E]`` of each row (a dropped view's heads count as absent), or None."""
        if study.position_logits is None:
            return None
        side, depth = study.position_logits
        rows = len(drops)
        view_mask = study.token_valid[:, 1:].any(1).repeat(rows, 1)  # [V] -> [R, V]: a view's cells are real if given
        for row, dropped in enumerate(drops):
            if dropped is not None:
                view_mask[row, dropped] = False
        side_valid, depth_valid = position_validity(study.view_ids.expand(rows, -1), view_mask)  # [R] each
        return position_evidence(side.expand(rows, -1), side_valid, depth.expand(rows, -1), depth_valid)  # [R, E]

    def encode_questions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Question tokens ``[Q, T, W]`` and their mask (None when no question is padded).

        One question is looked up in the cache first (least recently used out); callers do not modify
        the returned tensors.
        """
        if not self.question_cache or input_ids.shape[0] != 1:
            return self._encode_questions(input_ids, attention_mask)
        key = input_ids.numpy().tobytes() + attention_mask.numpy().tobytes()
        if key in self._questions:
            self._questions.move_to_end(key)
            return self._questions[key]
        encoded = self._questions[key] = self._encode_questions(input_ids, attention_mask)
        while len(self._questions) > self.question_cache:
            self._questions.popitem(last=False)
        return encoded

    def _encode_questions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor | None]:
        model = self.model
        mask = attention_mask.bool()
        if self.ort is not None:
            return self.ort.text(input_ids, attention_mask), (None if bool(mask.all()) else mask)
        states = model.text(input_ids, attention_mask)  # [Q, T, H]
        return model.text_to_width(states), (None if bool(mask.all()) else mask)

    # -------------------------------------------------------------------------------- answer
    def answer_logits(self, study: StudyEncoding, text: torch.Tensor, text_mask: torch.Tensor | None,
                      drops: list[int | None], keep_weights: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``[R, A]`` (fp32) for one row per entry of ``drops`` (None = every view, s = without slot s).

        ``text [1 or R, T, W]``. With ``keep_weights``, also the last text layer's cross-attention
        weights of row 0 ``[1, h, T, V*L + M]`` in the plain path's layout (zero on masked tokens).
        """
        kept = [self._kept_tokens(study, slot) for slot in drops]
        evidence = self.row_evidence(study, drops)  # [R, E] or None
        keeps, layouts = [k for k, _ in kept], [layout for _, layout in kept]
        logits: list[torch.Tensor | None] = [None] * len(drops)
        weights = None
        groups: dict[int, list[int]] = {}
        for row, keep in enumerate(keeps):
            groups.setdefault(0 if self.merge_rows else len(keep), []).append(row)
        for rows in groups.values():
            image, image_mask = self._gather_rows(study, [keeps[r] for r in rows])  # [G, n, W], [G, n] | None
            rows_text = text if text.shape[0] == 1 else text[rows]
            rows_text = rows_text.expand(len(rows), -1, -1)
            rows_mask = None if text_mask is None else text_mask.expand(len(rows), -1) if text_mask.shape[0] == 1 \
                else text_mask[rows]
            record = keep_weights and rows[0] == 0
            group_logits, group_weights = self._fuse_and_classify(
                rows_text, rows_mask, image, image_mask, record, ([layouts[r] for r in rows], study.token_valid.numel()),
                None if evidence is None else evidence[rows])
            for position, row in enumerate(rows):
                logits[row] = group_logits[position]
            if record:
                kept_weights = group_weights[:1] if image_mask is None else torch.cat(
                    [group_weights[:1, ..., : len(keeps[0])], group_weights[:1, ..., image.shape[1]:]], dim=-1)
                weights = self._full_layout(kept_weights, layouts[0], study.token_valid.numel())
        return torch.stack(logits).float(), weights  # [R, A]

    @staticmethod
    def _gather_rows(study: StudyEncoding, keeps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Image tokens ``[G, n, W]`` of rows with these kept tokens, padded to the longest row (mask: real)."""
        longest = max(len(keep) for keep in keeps)
        if all(len(keep) == longest for keep in keeps):
            return study.image_tokens[torch.stack(keeps)], None  # [G, n] -> [G, n, W]
        index = torch.zeros(len(keeps), longest, dtype=torch.long)
        mask = torch.zeros(len(keeps), longest, dtype=torch.bool)
        for row, keep in enumerate(keeps):
            index[row, : len(keep)] = keep
            mask[row, : len(keep)] = True
        return study.image_tokens[index], mask  # [G, n] -> [G, n, W]

    def _kept_tokens(self, study: StudyEncoding, dropped: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """A row's real tokens: rows of ``image_tokens`` and positions in the plain path's ``V*L`` layout.

        A dropped view keeps only its first token, which becomes its learned missing-view token.
        """
        v, length = study.token_valid.shape
        valid = study.token_valid.clone()
        if dropped is not None:
            valid[dropped, 1:] = False
        layout = valid.flatten().nonzero().flatten()  # [V, L] -> [n]
        table = layout.clone()
        if dropped is not None:
            table[layout == dropped * length] = v * length + dropped
        return table, layout

    def _fuse_and_classify(self, text: torch.Tensor, text_mask: torch.Tensor | None, image: torch.Tensor,
                           image_mask: torch.Tensor | None, keep_weights: bool,
                           layouts: tuple[list[torch.Tensor], int], evidence: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor | None]:
        model = self.model
        head = model.vqa_head
        if self.ort is not None:  # the prior is inside the exported graph
            text_fused, image_fused, weights = self.ort.fusion(text, text_mask, image, image_mask)
            weights = weights if keep_weights else None
        else:
            text_fused, image_fused, weights = self._fuse(text, text_mask, image, image_mask, keep_weights)
            if self.prior_kv is not None:  # per token, so on the kept tokens only
                text_fused, image_fused = head.inject_prior(text_fused, image_fused, prior_kv=self.prior_kv)
        if head.regions is not None:  # region pooling reads the plain path's token layout
            image_fused, image_mask = self._scatter_rows(image_fused, *layouts)
        evidence = None if evidence is None else evidence.to(image_fused.dtype)
        return head.classify(text_fused, image_fused, image_mask, evidence), weights

    def _fuse(self, text: torch.Tensor, text_mask: torch.Tensor | None, image: torch.Tensor,
              image_mask: torch.Tensor | None, keep_weights: bool
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The PyTorch fusion: fused text and image tokens, and the last text cross-attention if kept."""
        attention = self.model.fusion.text_layers[-1].cross_attn
        attention.keep_weights = keep_weights
        try:
            text_fused, image_fused = self.model.fusion(text, text_mask, image, image_mask)
            return text_fused, image_fused, attention.last_weights
        finally:
            attention.keep_weights, attention.last_weights = False, None

    @staticmethod
    def _scatter_rows(image: torch.Tensor, layouts: list[torch.Tensor], total: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused rows ``[G, n, W]`` back in the plain path's ``[G, V*L, W]`` layout, and its real-token mask."""
        full = image.new_zeros(image.shape[0], total, image.shape[-1])
        mask = torch.zeros(image.shape[0], total, dtype=torch.bool)
        for row, layout in enumerate(layouts):
            full[row, layout] = image[row, : len(layout)]
            mask[row, layout] = True
        return full, mask

    @staticmethod
    def _full_layout(weights: torch.Tensor, kept: torch.Tensor, total: int) -> torch.Tensor:
        """``[1, h, T, n + M]`` over kept tokens + memory -> ``[1, h, T, V*L + M]`` (zeros elsewhere)."""
        n = kept.shape[0]
        full = weights.new_zeros(*weights.shape[:-1], total + weights.shape[-1] - n).float()
        full[..., kept] = weights[..., :n].float()
        full[..., total:] = weights[..., n:].float()
        return full
