"""Torch datasets, collation and sampling for study–report pretraining.

Determinism: every random choice for a sample (MLM masks, patch masks) is seeded by
``(seed, epoch, dataset index)``, and :class:`GlobalBatchSampler` gives rank r the r-th contiguous
slice of each global batch. So N processes see exactly what one process sees for the same global
batch, and a resumed run sees exactly what the uninterrupted run saw.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from mvcm_core.config import ModelCfg
from mvcm_core.data.batching import image_batch, mask_tokens, text_batch
from mvcm_core.data.findings import fine_label_vector
from mvcm_core.data.positions import depth_targets, side_targets
from mvcm_core.data.study_store import StudyStore


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 62-bit seed for one sample in one epoch."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)[0] >> 2)


class StudyTextDataset(Dataset):
    """Rows of a :class:`StudyStore` as dicts (views, labels, text, findings labels, group id)."""

    def __init__(self, store: StudyStore, indices: Sequence[int]) -> None:
        self.store, self.indices = store, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> dict[str, Any]:
        index = self.indices[position]
        row = self.store.rows[index]
        views, labels = self.store.views(index)
        findings, depths = row.get("findings", []), row.get("depths")
        return {"index": index, "views": views, "view_labels": labels, "text": row["text"],
                "labels": row["labels"], "fine_labels": fine_label_vector(findings),
                "side": side_targets(findings, depths), "depth": depth_targets(findings, depths),
                "group_id": row.get("group_id", index)}


class PretrainCollator:
    """Items → batch dict (images, text, MLM masks, findings labels, per-sample seeds).

    ``text_states`` (optional ``[N, T, H]`` tensor indexed by store row) holds cached outputs of a
    frozen text encoder, tokenised with ``padding="max_length"``; then the token ids must come
    from ``token_cache`` (``input_ids``, ``attention_mask``, ``special_tokens_mask`` ``[N, T]``).
    """

    def __init__(self, cfg: ModelCfg, tokenizer: Any, *, seed: int = 0, mlm_probability: float = 0.15,
                 token_cache: dict[str, torch.Tensor] | None = None, text_states: torch.Tensor | None = None) -> None:
        self.cfg, self.tokenizer, self.seed = cfg, tokenizer, seed
        self.mlm_probability = mlm_probability
        self.token_cache, self.text_states = token_cache, text_states
        self.epoch = 0

    def tokens(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Token ids of the items' reports (from the cache when there is one)."""
        if self.token_cache is not None:
            rows = torch.tensor([item["index"] for item in items])
            return {key: value[rows] for key, value in self.token_cache.items()}
        return text_batch([item["text"] for item in items], self.tokenizer, self.cfg.text.max_length, "max_length")

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = image_batch([item["views"] for item in items], [item["view_labels"] for item in items], self.cfg)
        batch.update(self.tokens(items))
        seeds = [sample_seed(self.seed, self.epoch, item["index"]) for item in items]
        masked, labels = [], []
        for row, seed in enumerate(seeds):  # per-sample generators: independent of batch composition
            ids, mlm_labels = mask_tokens(batch["input_ids"][row:row + 1], batch["attention_mask"][row:row + 1],
                                          batch["special_tokens_mask"][row:row + 1], self.tokenizer.mask_token_id,
                                          self.tokenizer.vocab_size, self.mlm_probability,
                                          torch.Generator().manual_seed(seed))
            masked.append(ids)
            labels.append(mlm_labels)
        batch["mlm_input_ids"], batch["mlm_labels"] = torch.cat(masked), torch.cat(labels)
        batch["sample_seeds"] = torch.tensor([s % (2**31) for s in seeds], dtype=torch.long)
        batch["labels"] = torch.tensor(np.asarray([item["labels"] for item in items], dtype=np.float32))
        batch["teacher_labels"] = torch.tensor(np.asarray([item["fine_labels"] for item in items], dtype=np.float32))
        for name in ("side", "depth"):  # where each finding lies (mvcm_core.data.positions)
            batch[f"{name}_targets"] = torch.tensor([item[name][0] for item in items], dtype=torch.float32)
            batch[f"{name}_mask"] = torch.tensor([item[name][1] for item in items], dtype=torch.float32)
        batch["group_ids"] = torch.tensor([item["group_id"] for item in items], dtype=torch.long)
        batch["row_index"] = torch.tensor([item["index"] for item in items], dtype=torch.long)
        if self.text_states is not None:
            batch["text_states"] = self.text_states[batch["row_index"]].float()
        return batch


class GlobalBatchSampler(Sampler[list[int]]):
    """Shuffled global batches; rank r of ``world`` gets the r-th contiguous slice of each.

    Batches are positions into the dataset; ``start_batch`` skips batches already consumed in this
    epoch (exact resume).
    """

    def __init__(self, length: int, global_batch: int, *, rank: int = 0, world: int = 1, seed: int = 0,
                 epoch: int = 0, start_batch: int = 0) -> None:
        if global_batch % world:
            raise ValueError(f"global batch {global_batch} is not divisible by {world} processes")
        if length < global_batch:
            raise ValueError(f"dataset of {length} rows is smaller than one global batch of {global_batch}")
        self.length, self.global_batch, self.rank, self.world = length, global_batch, rank, world
        self.seed, self.epoch, self.start_batch = seed, epoch, start_batch

    def __len__(self) -> int:
        return self.length // self.global_batch - self.start_batch

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed * 7919 + self.epoch))
        local = self.global_batch // self.world
        for batch in range(self.start_batch, self.length // self.global_batch):
            start = batch * self.global_batch + self.rank * local
            yield order[start:start + local].tolist()
