"""Training machinery shared by pretraining and fine-tuning: distributed setup, optimiser, schedule,
the step loop with accumulation / clipping / bf16, exact-resume state, JSONL logs and curve plots."""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    """Where this process sits in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> DistInfo:
    """Initialise ``torch.distributed`` when launched by ``torchrun`` (gloo on CPU, NCCL on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def teardown_distributed() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def build_optimizer(module: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.98)
                    ) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases, norms, embeddings, tokens and the logit scale."""
    decay, no_decay = [], []
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            continue
        flat = parameter.ndim < 2 or any(k in name for k in ("norm", "embedding", "token", "logit_scale", "bias"))
        (no_decay if flat else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float = 0.01) -> Callable[[int], float]:
    """LR multiplier: linear warm-up, then cosine decay to ``min_ratio``."""
    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return multiplier


def rng_state() -> dict[str, Any]:
    """Every RNG a step may touch."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_training_state(path: Path, **state: Any) -> None:
    """Atomically write a resume state (model, optimiser, scheduler, step, RNG) with ``torch.save``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        torch.save(state, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_training_state(path: Path) -> dict[str, Any]:
    """Read a resume state written by :func:`save_training_state` (our own file, trusted)."""
    return torch.load(path, map_location="cpu", weights_only=False)


class JsonlLog:
    """Append-only JSON-lines log (rank 0 only)."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path, self.enabled = path, enabled
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def records(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def truncate_log(path: Path, last_step: int) -> None:
    """Drop records after ``last_step`` (a resumed run rewrites them)."""
    if path.is_file():
        kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= last_step]
        path.write_text("".join(line + "\n" for line in kept))


def plot_curves(records: Iterable[dict[str, Any]], path: Path, title: str) -> Path | None:
    """One panel per logged loss term plus the learning rate; saved as PNG."""
    records = list(records)
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for r in records for k in r if k.endswith("_loss") or k == "loss"}) + ["lr"]
    columns = 4
    rows = math.ceil(len(keys) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.6 * rows), squeeze=False)
    for axis, key in zip(axes.flat, keys):
        points = [(r["step"], r[key]) for r in records if key in r]
        axis.plot([p[0] for p in points], [p[1] for p in points], lw=1)
        axis.set_title(key, fontsize=9)
        axis.tick_params(labelsize=7)
    for axis in list(axes.flat)[len(keys):]:
        axis.axis("off")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


