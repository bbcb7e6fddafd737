"""Multi-view study–report pretraining: ``python -m training.pretrain --config training/configs/smoke.yaml``.

Also runs under ``torchrun --nproc_per_node N`` (DistributedDataParallel; gloo on CPU). Writes to the
run folder: ``config.resolved.yaml``, ``log.jsonl`` (every loss term and the learning rate per
step), ``last.pt`` (exact-resume state), ``checkpoint/`` (config + safetensors + manifest) and
``curves.png``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from mvcm_core.checkpoint import load_weights_into, save_pretrained
from mvcm_core.data.pretrain_dataset import GlobalBatchSampler, PretrainCollator, StudyTextDataset
from mvcm_core.factory import create_model
from mvcm_core.models.text import load_tokenizer
from mvcm_core.objective import PretrainTask
from training import engine
from training.data_setup import cache_text_states, load_store
from training.params import common_parser, resolve, save_resolved


def make_loader(dataset: StudyTextDataset, collator: PretrainCollator, train: dict[str, Any],
                info: engine.DistInfo, epoch: int, start_batch: int) -> DataLoader:
    """The loader of one epoch, skipping ``start_batch`` micro-batches already consumed."""
    collator.epoch = epoch
    sampler = GlobalBatchSampler(len(dataset), train["batch_size"], rank=info.rank, world=info.world,
                                 seed=train["seed"], epoch=epoch, start_batch=start_batch)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collator, num_workers=train.get("num_workers", 0))


def run_step(task: torch.nn.Module, micro_batches: list[dict[str, torch.Tensor]], step: int, bf16: bool
             ) -> dict[str, float]:
    """Forward + backward over the accumulated micro-batches; returns the mean of each logged term."""
    sums: dict[str, float] = {}
    for i, batch in enumerate(micro_batches):
        sync_context = task.no_sync() if isinstance(task, DistributedDataParallel) and i < len(micro_batches) - 1 \
            else contextlib.nullcontext()
        with sync_context, torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            terms = task(batch, step)
        (terms["loss"] / len(micro_batches)).backward()
        for key, value in terms.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach()) / len(micro_batches)
    return sums


def train(config: dict[str, Any], resume: bool = False) -> Path:
    """Run (or resume) a pretraining run; returns the run folder."""
    info = engine.setup_distributed()
    run, train_cfg = Path(config["out"]), config["train"]
    engine.seed_everything(train_cfg["seed"])
    if train_cfg.get("deterministic", True):  # bitwise-repeatable CPU kernels (exact resume, 1 vs N ranks)
        torch.use_deterministic_algorithms(True, warn_only=True)
    model = create_model(config["model"], config.get("model_overrides"))
    if config.get("init"):  # continue from a checkpoint (retrieval fine-tuning); a VQA head is ignored,
        load_weights_into(model, config["init"], allow_unused=("vqa_head.",),  # new position heads start fresh
                          allow_missing=("side_head.", "depth_head."))
    store = load_store(config["data"], model.cfg, run, info)
    tokenizer = load_tokenizer(model.cfg.text)
    indices = store.indices(config["data"].get("split", "train"))
    token_cache, text_states = cache_text_states(model, tokenizer, store) if model.cfg.text.trainable == "frozen" \
        else (None, None)
    collator = PretrainCollator(model.cfg, tokenizer, seed=train_cfg["seed"],
                                mlm_probability=train_cfg.get("mlm_probability", 0.15),
                                token_cache=token_cache, text_states=text_states)
    dataset = StudyTextDataset(store, indices)
    task = PretrainTask(model, config["losses"], mask_ratio=train_cfg.get("mask_ratio", 0.0), seed=train_cfg["seed"])
    wrapped = DistributedDataParallel(task, find_unused_parameters=True) if info.world > 1 else task
    accum = int(train_cfg.get("grad_accum", 1))
    steps_per_epoch = (len(dataset) // train_cfg["batch_size"]) // accum
    if steps_per_epoch < 1:
        raise ValueError(f"{len(dataset)} training studies cannot fill one step of {train_cfg['batch_size']}×{accum}")
    total = int(train_cfg.get("steps") or train_cfg["epochs"] * steps_per_epoch)
    optimizer = engine.build_optimizer(task, float(train_cfg["lr"]), float(train_cfg.get("weight_decay", 0.05)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, engine.warmup_cosine(
        total, int(train_cfg.get("warmup_steps", 0)), float(train_cfg.get("min_lr_ratio", 0.01))))
    log = engine.JsonlLog(run / "log.jsonl", enabled=info.is_main)
    step = 0
    if resume and (run / "last.pt").is_file():
        state = engine.load_training_state(run / "last.pt")
        task.load_state_dict(state["task"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        engine.set_rng_state(state["rng"])
        step = int(state["step"])
        if info.is_main:
            engine.truncate_log(log.path, step)  # records 1..step were written before the stop
    elif info.is_main:
        log.path.unlink(missing_ok=True)
    if info.is_main:
        save_resolved(config, run)
    reached = _loop(wrapped, task, optimizer, scheduler, dataset, collator, train_cfg, info, log, run,
                    start=step, total=total, steps_per_epoch=steps_per_epoch, accum=accum)
    if info.is_main and reached >= total:
        records = log.records()
        final = {k: v for k, v in records[-1].items() if k.endswith("_loss") or k == "loss"} if records else {}
        save_pretrained(model, run / "checkpoint", provenance=store.card.get("provenance", {}),
                        metrics={"final_train_losses": final, "steps": total},
                        command=config.get("command", "python -m training.pretrain"))
        engine.plot_curves(records, run / "curves.png", f"pretraining: {model.cfg.name}")
    engine.teardown_distributed()
    return run


def _loop(wrapped, task, optimizer, scheduler, dataset, collator, train_cfg, info, log, run, *,  # noqa: ANN001
          start: int, total: int, steps_per_epoch: int, accum: int) -> int:
    """The optimisation loop from ``start`` to ``total`` optimiser steps; returns the step reached."""
    clip, bf16 = float(train_cfg.get("clip_grad", 1.0)), bool(train_cfg.get("bf16", False))
    every = int(train_cfg.get("checkpoint_every", 0))
    progress = tqdm(total=total, initial=start, desc="pretrain", disable=not info.is_main, dynamic_ncols=True)
    iterator, epoch = None, -1
    step = start
    while step < total:
        if iterator is None or step // steps_per_epoch != epoch:
            epoch = step // steps_per_epoch
            loader = make_loader(dataset, collator, train_cfg, info, epoch, (step % steps_per_epoch) * accum)
            iterator = iter(loader)
        started = time.perf_counter()
        terms = run_step(wrapped, [next(iterator) for _ in range(accum)], step, bf16)
        grad_norm = float(torch.nn.utils.clip_grad_norm_([p for p in task.parameters() if p.requires_grad], clip))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if "proto" in task.losses:
            task.losses["proto"].normalize_prototypes()
        step += 1
        if info.world > 1:  # log the global-batch values: the mean over ranks
            values = torch.tensor([terms[k] for k in sorted(terms)])
            torch.distributed.all_reduce(values)
            terms = dict(zip(sorted(terms), (values / info.world).tolist()))
        record = {"step": step, "epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "grad_norm": grad_norm,
                  "seconds": time.perf_counter() - started, **terms}
        log.write(record)
        progress.update(1)
        progress.set_postfix(loss=f"{terms['loss']:.3f}")
        stopping = bool(train_cfg.get("stop_after")) and step >= int(train_cfg["stop_after"])
        if info.is_main and (stopping or (every and (step % every == 0 or step == total))):
            engine.save_training_state(run / "last.pt", task=task.state_dict(), optimizer=optimizer.state_dict(),
                                       scheduler=scheduler.state_dict(), rng=engine.rng_state(), step=step)
        if stopping:
            break  # simulates a killed run (tests of exact resume)
    progress.close()
    return step


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (``python -m training.pretrain``)."""
    args = common_parser(__doc__.splitlines()[0]).parse_args(argv)
    config = resolve(args)
    config["command"] = "python -m training.pretrain " + " ".join(argv if argv is not None else [])
    train(config, resume=args.resume)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
