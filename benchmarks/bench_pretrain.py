"""Pretraining throughput of ``mvcm-tiny`` (studies/s), where a step's time goes, and the trainable share.

Run: ``python -m benchmarks.bench_pretrain [--data runs/build/data] [--batch 32] [--steps 5] [--quick] [--json]``.
The step is the served recipe's (``training/configs/pretrain_tiny.yaml``: every loss, 50% patch
masking) on real batches of the phantom dataset through the real ``DataLoader`` and collator
(synthetic batches when no dataset is found). Each phase is timed separately: data (next batch),
forward (model + losses), backward, optimizer (clipping, AdamW step, zero_grad, prototype
normalisation). Settings, in the same run:

- optimised: bf16 autocast + cached frozen-text-encoder states (as ``training.pretrain`` runs it);
- baseline: the same step with neither (fp32, the text encoder run every step);
- in between (not with ``--quick``): each optimisation alone.

Medians over ``--steps`` steps after one warm-up step. Prints figures; never asserts on time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from benchmarks.common import REPO, emit
from mvcm_core.data.batching import text_batch
from mvcm_core.factory import create_model
from mvcm_core.models.adapters import count_parameters
from mvcm_core.models.text import load_tokenizer
from mvcm_core.objective import PretrainTask
from training.engine import build_optimizer

PHASES = ("data", "forward", "backward", "optimizer")


class _Subset(torch.utils.data.Dataset):
    """A few store rows, renumbered 0..n-1 so a small text-state cache can serve them."""

    def __init__(self, store: Any, indices: Sequence[int]) -> None:
        from mvcm_core.data.pretrain_dataset import StudyTextDataset

        self.inner = StudyTextDataset(store, indices)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, position: int) -> dict[str, Any]:
        return {**self.inner[position], "index": position}


def make_loader(model: torch.nn.Module, tokenizer: Any, data: Path, count: int, batch: int, cached: bool
                ) -> torch.utils.data.DataLoader:
    """The real collator over the first ``count`` train studies (text states cached when ``cached``)."""
    from mvcm_core.data.pretrain_dataset import PretrainCollator
    from mvcm_core.data.study_store import StudyStore

    store = StudyStore.load(data, model.cfg.preprocess.image_size, mmap=True)
    dataset = _Subset(store, store.indices("train")[:count])
    token_cache = states = None
    if cached:
        texts = [dataset.inner.store.rows[i]["text"] for i in dataset.inner.indices]
        token_cache = text_batch(texts, tokenizer, model.cfg.text.max_length, "max_length")
        with torch.no_grad():
            states = model.text(token_cache["input_ids"], token_cache["attention_mask"]).to(torch.bfloat16)
    collator = PretrainCollator(model.cfg, tokenizer, seed=0, token_cache=token_cache, text_states=states)
    return torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=False, collate_fn=collator, drop_last=True)


def phase_times(model: torch.nn.Module, loader: torch.utils.data.DataLoader, losses: dict, mask_ratio: float,
                bf16: bool, steps: int) -> dict[str, float]:
    """Median seconds per phase of one optimiser step (after one warm-up step)."""
    task = PretrainTask(model, losses, mask_ratio=mask_ratio, seed=0)
    optimizer = build_optimizer(task, 1e-4, 0.05)
    parameters = [p for p in task.parameters() if p.requires_grad]
    times: dict[str, list[float]] = {phase: [] for phase in PHASES}
    iterator = iter(loader)
    for step in range(steps + 1):
        marks = [time.perf_counter()]
        batch = next(iterator)
        marks.append(time.perf_counter())
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            terms = task(batch, step)
        marks.append(time.perf_counter())
        terms["loss"].backward()
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if "proto" in task.losses:
            task.losses["proto"].normalize_prototypes()
        marks.append(time.perf_counter())
        if step:  # the first step is warm-up
            for phase, start, stop in zip(PHASES, marks, marks[1:]):
                times[phase].append(stop - start)
    return {phase: statistics.median(values) for phase, values in times.items()}


def run(data: Path, batch: int, steps: int, quick: bool) -> dict[str, Any]:
    """Throughput and phase split per setting, and the trainable-parameter shares."""
    recipe = yaml.safe_load((REPO / "training" / "configs" / "pretrain_tiny.yaml").read_text())
    torch.manual_seed(0)
    model = create_model("mvcm-tiny")
    tokenizer = load_tokenizer(model.cfg.text)
    count = batch * (steps + 1)
    loaders = {cached: make_loader(model, tokenizer, data, count, batch, cached) for cached in (True, False)}
    settings = [("optimised: bf16 autocast + cached text states", True, True),
                ("baseline: fp32, text encoder every step", False, False)]
    if not quick:
        settings += [("bf16 autocast only", True, False), ("cached text states only", False, True)]
    rows = []
    for name, bf16, cached in settings:
        seconds = phase_times(model, loaders[cached], recipe["losses"], recipe["train"]["mask_ratio"], bf16, steps)
        total = sum(seconds.values())
        rows.append({"setting": name, "seconds_per_step": round(total, 3), "studies_per_second": round(batch / total, 1),
                     **{f"{phase}_s": round(value, 3) for phase, value in seconds.items()},
                     **{f"{phase}_share": round(value / total, 3) for phase, value in seconds.items()}})
    adapted = create_model("mvcm-tiny", {"text": {"trainable": "adapters"}, "vision": {"trainable": "adapters"}})
    trainable, total = count_parameters(adapted)
    tiny_trainable, tiny_total = count_parameters(model)
    return {"threads": torch.get_num_threads(), "batch": batch, "steps": steps, "data": str(data), "throughput": rows,
            "speedup_vs_baseline": round(rows[1]["seconds_per_step"] / rows[0]["seconds_per_step"], 2),
            "adapters": {"trainable": trainable, "total": total, "fraction": round(trainable / total, 4)},
            "mvcm_tiny_default": {"trainable": tiny_trainable, "total": tiny_total,
                                  "fraction": round(tiny_trainable / tiny_total, 4)}}


def main(argv: Sequence[str] | None = None) -> int:
    """Print studies/s and the phase split per setting."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="a built dataset (default: runs/build/data)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="batch 8, 2 steps, two settings")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    data = args.data or next((p for p in (REPO / "runs" / "build" / "data", REPO / "runs" / "served" / "data")
                              if (p / "studies.jsonl").is_file()), None)
    if data is None:
        parser.error("no built dataset found; pass --data (python -m training.build_data)")
    batch, steps = (8, 2) if args.quick else (args.batch, args.steps)
    result = run(data, batch, steps, args.quick)
    lines = [f"mvcm-tiny pretraining step (served recipe), batch {batch} two-view studies, {result['threads']} threads"]
    for row in result["throughput"]:
        split = ", ".join(f"{phase} {100 * row[f'{phase}_share']:.0f}%" for phase in PHASES)
        lines.append(f"  {row['studies_per_second']:>6} studies/s  ({row['seconds_per_step']} s/step: {split})  "
                     f"{row['setting']}")
    a, d = result["adapters"], result["mvcm_tiny_default"]
    lines += [f"speed-up over the baseline step: {result['speedup_vs_baseline']}x",
              f"adapters on (ViT + text): {a['trainable']:,} of {a['total']:,} parameters train ({100 * a['fraction']:.1f}%)",
              f"mvcm-tiny default (frozen text): {d['trainable']:,} of {d['total']:,} train ({100 * d['fraction']:.1f}%)"]
    emit(result, args.json, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
