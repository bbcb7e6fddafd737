"""Data set-up shared by the training entry points: find or build the dataset, cache frozen text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mvcm_core.config import ModelCfg
from mvcm_core.data.batching import text_batch
from mvcm_core.data.study_store import StudyStore
from training.engine import DistInfo


def load_store(data_cfg: dict[str, Any], model_cfg: ModelCfg, run: Path, info: DistInfo) -> StudyStore:
    """Load the dataset named by ``data.root``; build it first when ``data.build`` says how.

    Only rank 0 builds; the other ranks wait at a barrier and then load the same files.
    """
    root = Path(data_cfg.get("root") or run / "data")
    size = model_cfg.preprocess.image_size
    build = data_cfg.get("build")
    if build and not (root / f"images_{size}.npy").is_file():
        if info.is_main:
            from training.build_data import build_dataset

            build_dataset(root, size=size, **build)
        if info.world > 1:
            torch.distributed.barrier()
    return StudyStore.load(root, size)


@torch.inference_mode()
def cache_text_states(model: torch.nn.Module, tokenizer: Any, store: StudyStore, chunk: int = 64
                      ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Tokenise every report once and run the frozen text encoder once (bf16 storage).

    Returns:
        (token cache: input_ids / attention_mask / special_tokens_mask ``[N, T]``,
         text states ``[N, T, H]`` in bfloat16).
    """
    texts = [row["text"] for row in store.rows]
    tokens = text_batch(texts, tokenizer, model.cfg.text.max_length, "max_length")
    states = []
    for start in tqdm(range(0, len(texts), chunk), desc="text cache", leave=False):
        part = slice(start, start + chunk)
        states.append(model.text(tokens["input_ids"][part], tokens["attention_mask"][part]).to(torch.bfloat16))
    return tokens, torch.cat(states)
