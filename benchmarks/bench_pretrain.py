"""Pretraining throughput of ``mvcm-tiny`` on this machine, and the share of parameters that train.

Run: ``python -m benchmarks.bench_pretrain [--batch 16] [--steps 6] [--json]``. Synthetic batches
(random pixels, real tokenised report text) isolate the model + loss step from data loading.
Prints medians after a warm-up step; never asserts on time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence

import torch

from mvcm_core.data.batching import mask_tokens
from mvcm_core.factory import create_model
from mvcm_core.models.adapters import count_parameters
from mvcm_core.models.text import load_tokenizer
from mvcm_core.objective import LOSS_NAMES, PretrainTask
from training.engine import build_optimizer

REPORT = ("The heart is normal in size. There is a small right pleural effusion with adjacent "
          "atelectasis. No pneumothorax. Degenerative changes of the thoracic spine.")


def synthetic_batch(model: torch.nn.Module, tokenizer, batch: int) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """A full pretraining batch with random images and real report tokens."""
    cfg = model.cfg
    size = cfg.preprocess.image_size
    encoded = tokenizer([REPORT] * batch, padding="max_length", truncation=True, max_length=cfg.text.max_length,
                        return_tensors="pt", return_special_tokens_mask=True)
    special = encoded["special_tokens_mask"].bool()
    mlm_ids, mlm_labels = mask_tokens(encoded["input_ids"], encoded["attention_mask"], special,
                                      tokenizer.mask_token_id, tokenizer.vocab_size, 0.15, torch.Generator().manual_seed(0))
    labels = torch.zeros(batch, 25)
    labels[torch.arange(batch), torch.arange(batch) % 25] = 1
    return {"images": torch.randn(batch, 2, cfg.vision.in_chans, size, size),
            "view_ids": torch.tensor([[0, 1]] * batch), "view_mask": torch.ones(batch, 2, dtype=torch.bool),
            "input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
            "special_tokens_mask": special, "mlm_input_ids": mlm_ids, "mlm_labels": mlm_labels,
            "labels": labels, "group_ids": torch.arange(batch), "sample_seeds": torch.arange(batch)}


def step_seconds(model: torch.nn.Module, batch: dict[str, torch.Tensor], losses: dict, mask_ratio: float,
                 bf16: bool, steps: int, cache_text: bool) -> float:
    """Median seconds of one optimiser step."""
    task = PretrainTask(model, losses, mask_ratio=mask_ratio)
    optimizer = build_optimizer(task, 1e-4, 0.05)
    if cache_text:
        with torch.no_grad():
            batch = {**batch, "text_states": model.text(batch["input_ids"], batch["attention_mask"])}
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            terms = task(batch, step)
        terms["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:  # the first step is warm-up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> int:
    """Print studies/s for a few settings and the trainable share with adapters."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = create_model("mvcm-tiny")
    tokenizer = load_tokenizer(model.cfg.text)
    batch = synthetic_batch(model, tokenizer, args.batch)
    every_loss = {name: {"weight": 1.0} for name in LOSS_NAMES}
    every_loss["proto"]["num_prototypes"] = 64
    settings = [
        ("all 11 losses, 50% patch masking, cached text", every_loss, 0.5, False, True),
        ("all 11 losses, 50% patch masking, cached text, bf16", every_loss, 0.5, True, True),
        ("ITC only, no masking, text encoder run every step", {"itc": {"weight": 1.0}}, 0.0, False, False),
    ]
    rows = []
    for name, losses, ratio, bf16, cache in settings:
        seconds = step_seconds(model, batch, losses, ratio, bf16, args.steps, cache)
        rows.append({"setting": name, "seconds_per_step": round(seconds, 3),
                     "studies_per_second": round(args.batch / seconds, 1)})
    adapted = create_model("mvcm-tiny", {"text": {"trainable": "adapters"}, "vision": {"trainable": "adapters"}})
    trainable, total = count_parameters(adapted)
    tiny_trainable, tiny_total = count_parameters(model)
    result = {"threads": torch.get_num_threads(), "batch": args.batch, "throughput": rows,
              "adapters": {"trainable": trainable, "total": total, "fraction": round(trainable / total, 4)},
              "mvcm_tiny_default": {"trainable": tiny_trainable, "total": tiny_total,
                                    "fraction": round(tiny_trainable / tiny_total, 4)}}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"mvcm-tiny pretraining, batch {args.batch} two-view studies, {result['threads']} threads")
        for row in rows:
            print(f"  {row['studies_per_second']:>6} studies/s  ({row['seconds_per_step']} s/step)  {row['setting']}")
        a = result["adapters"]
        print(f"adapters on (ViT + text): {a['trainable']:,} of {a['total']:,} parameters train ({100 * a['fraction']:.1f}%)")
        d = result["mvcm_tiny_default"]
        print(f"mvcm-tiny default (frozen text): {d['trainable']:,} of {d['total']:,} train ({100 * d['fraction']:.1f}%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
