"""From records to the batch dict the model takes (torch; never imported by the DICOM reader).

Batch contract: ``images [B, V, C, H, W]`` float, ``view_ids [B, V]`` long (0 frontal,
1 lateral, 2 unknown), ``view_mask [B, V]`` bool, ``input_ids`` / ``attention_mask [B, T]``, and for
MLM ``mlm_input_ids`` / ``mlm_labels [B, T]`` (-100 = not scored).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mvcm_core.config import VIEW_IDS, VIEW_OF_LABEL, ModelCfg

IGNORE_INDEX = -100


def order_views(labels: Sequence[str], max_views: int) -> list[int | None]:
    """Indices of the views to feed, frontal slot first then lateral; None where a slot is empty.

    With ``max_views == 2`` the slots are (frontal, lateral); unknown views fill empty slots.
    """
    frontal = [i for i, label in enumerate(labels) if VIEW_OF_LABEL.get(label) == "frontal"]
    lateral = [i for i, label in enumerate(labels) if VIEW_OF_LABEL.get(label) == "lateral"]
    unknown = [i for i, label in enumerate(labels) if VIEW_OF_LABEL.get(label, "unknown") == "unknown"]
    slots: list[int | None] = [frontal[0] if frontal else None, lateral[0] if lateral else None]
    rest = frontal[1:] + lateral[1:] + unknown
    for position in range(2):
        if slots[position] is None and rest and VIEW_OF_LABEL.get(labels[rest[0]], "unknown") == "unknown":
            slots[position] = rest.pop(0)
    slots.extend(rest)
    return (slots + [None] * max_views)[:max_views]


def image_batch(views: Sequence[Sequence[np.ndarray]], labels: Sequence[Sequence[str]], cfg: ModelCfg
                ) -> dict[str, torch.Tensor]:
    """Stack uint8 ``[S, S]`` views per study into images / view_ids / view_mask tensors."""
    size, channels, v = cfg.preprocess.image_size, cfg.vision.in_chans, cfg.vision.max_views
    images = torch.zeros(len(views), v, channels, size, size)
    view_ids = torch.full((len(views), v), VIEW_IDS["unknown"], dtype=torch.long)
    view_mask = torch.zeros(len(views), v, dtype=torch.bool)
    for b, (study_views, study_labels) in enumerate(zip(views, labels)):
        for slot, index in enumerate(order_views(study_labels, v)):
            default_view = ("frontal", "lateral")[slot] if slot < 2 else "unknown"
            if index is None:
                view_ids[b, slot] = VIEW_IDS[default_view]
                continue
            pixels = torch.from_numpy(np.ascontiguousarray(study_views[index])).float() / 255.0
            images[b, slot] = ((pixels - cfg.preprocess.mean) / cfg.preprocess.std).expand(channels, -1, -1)
            view_ids[b, slot] = VIEW_IDS[VIEW_OF_LABEL.get(study_labels[index], "unknown")]
            view_mask[b, slot] = True
    return {"images": images, "view_ids": view_ids, "view_mask": view_mask}


def text_batch(texts: Sequence[str], tokenizer, max_length: int,  # noqa: ANN001
               padding: str = "longest") -> dict[str, torch.Tensor]:
    """Tokenise reports / questions (truncated to ``max_length``; ``padding`` as in transformers)."""
    encoded = tokenizer(list(texts), padding=padding, truncation=True, max_length=max_length,
                        return_tensors="pt", return_special_tokens_mask=True)
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
            "special_tokens_mask": encoded["special_tokens_mask"].bool()}


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_mask: torch.Tensor,
                mask_token_id: int, vocab_size: int, probability: float = 0.15,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking (80% [MASK], 10% random, 10% kept) of real, non-special tokens.

    Returns:
        (masked input ids [B, T], labels [B, T] with -100 where nothing is scored).
    """
    candidates = attention_mask.bool() & ~special_mask
    chosen = (torch.rand(input_ids.shape, generator=generator) < probability) & candidates
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    roll = torch.rand(input_ids.shape, generator=generator)
    masked = input_ids.clone()
    masked[chosen & (roll < 0.8)] = mask_token_id
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator)
    replace = chosen & (roll >= 0.8) & (roll < 0.9)
    masked[replace] = random_ids[replace]
    return masked, labels
