"""VQA fine-tuning: ``python -m training.finetune_vqa --config finetune_vqa [--set vqa.gca=false]``.

Classification over an answer vocabulary built from the training split only (``vqa.vocabulary:
train+test`` reproduces the literature's leaky label space and is labelled as such), with AMiF's
gated cross-attention prior as a switch. Model selection on the validation split (the dataset's own,
else carved from train by study); ``selection.select_on_test: true`` is the literature protocol and
every output says so. Works on multi-view studies (``mvcm-qa``) and on single-image datasets read
by :mod:`mvcm_core.data.readers` (``vqa-rad``, ``slake``, ``pathvqa``, ``vqa-med-2019``).
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from mvcm_core.checkpoint import CheckpointError, load_weights_into, save_pretrained
from mvcm_core.config import ModelCfg, merge_overrides
from mvcm_core.data.vqa_dataset import (
    StudyGroupedSampler,
    VQACollator,
    VQADataset,
    VQAExample,
    examples_from_records,
    examples_from_store,
)
from mvcm_core.factory import create_model, get_model_config
from mvcm_core.models.text import load_tokenizer
from mvcm_core.models.vqa import answer_prior_words, pointer_targets
from training import engine
from training.params import common_parser, resolve, save_resolved

CLEAN = "clean: model selected on a validation split (never on test)"
LITERATURE = "LITERATURE PROTOCOL: best epoch selected on the test split (not a clean estimate)"


def load_examples(data: dict[str, Any], size: int) -> dict[str, list[VQAExample]]:
    """Train / val / test examples of the configured dataset (val carved from train if absent)."""
    kind, root = data.get("kind", "mvcm-qa"), Path(data["root"])
    if kind == "mvcm-qa":
        from mvcm_core.data.study_store import StudyStore

        store = StudyStore.load(root, size)
        qa = json.loads((root / "qa.json").read_text())
        examples = {split: examples_from_store(store, qa, split) for split in ("train", "val", "test")}
    else:
        from mvcm_core.data.readers import read_dataset

        examples = {split: [] for split in ("train", "val", "test")}
        for split in ("train", "val", "test"):
            try:
                examples[split] = examples_from_records(read_dataset(kind, root, split=split), size)
            except Exception as exc:  # noqa: BLE001 - datasets without a split raise; val is carved below
                if split != "val":
                    raise ValueError(f"{kind}: cannot read the {split} split ({exc})") from None
    if not examples["val"]:
        examples["train"], examples["val"] = carve_by_study(examples["train"], data.get("val_fraction", 0.15),
                                                            data.get("seed", 0))
    return examples


def carve_by_study(train: list[VQAExample], fraction: float, seed: int) -> tuple[list[VQAExample], list[VQAExample]]:
    """Deterministic study-level validation split carved from train (no study on both sides)."""
    from mvcm_core.eval.protocol import carve_validation

    return carve_validation(train, fraction, seed, "study_id")


def vocabulary(examples: dict[str, list[VQAExample]], mode: str) -> list[str]:
    """Answers of train (default) or train+test (the literature's leaky label space)."""
    splits = ("train",) if mode == "train" else ("train", "test")
    if mode not in ("train", "train+test"):
        raise ValueError(f"vqa.vocabulary must be train or train+test, got {mode!r}")
    return sorted({e.answer for split in splits for e in examples[split]})


def build_vqa_model(init: str, answers: list[str], gca: bool, overrides: dict[str, Any] | None) -> torch.nn.Module:
    """The pretrained backbone (checkpoint folder or a model name) plus a fresh VQA head."""
    cfg = get_model_config(init, overrides)
    tokenizer = load_tokenizer(cfg.text)
    words = answer_prior_words(answers)
    prior_ids = sorted({i for word in words for i in tokenizer(word, add_special_tokens=False)["input_ids"]})
    cfg = ModelCfg.from_dict(merge_overrides(cfg.to_dict(), {"heads": {
        "vqa_answers": answers, "vqa_gca": gca, "vqa_prior_token_ids": prior_ids}}))
    model = create_model(cfg)
    if Path(init).is_dir():
        # a VQA head, and fusion positions when fine-tuning adds them, are new on a pretrained init
        load_weights_into(model, init, allow_missing=("vqa_head.", "fusion_positions"), allow_unused=("vqa_head.",))
    return model


@torch.no_grad()
def predict(model: torch.nn.Module, loader: DataLoader, answers: list[str]) -> dict[str, dict[str, Any]]:
    """``qid -> {"answer", "probability", "top": [(answer, p), ...]}`` for every example."""
    model.eval()
    out = {}
    for batch in loader:
        probabilities = model.vqa_logits(batch).float().softmax(dim=-1)
        top_p, top_i = probabilities.topk(min(3, len(answers)), dim=-1)
        for qid, ps, idx in zip(batch["qids"], top_p.tolist(), top_i.tolist()):
            out[qid] = {"answer": answers[idx[0]], "probability": ps[0],
                        "top": [(answers[i], p) for i, p in zip(idx, ps)]}
    return out


def accuracy(examples: list[VQAExample], predictions: dict[str, dict[str, Any]]) -> float:
    """Exact-match accuracy (selection metric; full metrics live in mvcm_core.eval)."""
    return sum(predictions[e.qid]["answer"] == e.answer for e in examples) / max(1, len(examples))


def answer_loss(logits: torch.Tensor, targets: torch.Tensor, content_types: Sequence[str],
                weights: dict[str, float] | None) -> torch.Tensor:
    """Cross-entropy over ``logits [B, A]``; with ``weights``, each question weighted by its content type.

    The weighted loss is normalised by the total weight of the in-vocabulary questions, so weights of 1
    give the plain mean.
    """
    if not weights:
        return torch.nn.functional.cross_entropy(logits.float(), targets, ignore_index=-100)
    per_question = torch.nn.functional.cross_entropy(logits.float(), targets, ignore_index=-100, reduction="none")
    scale = torch.tensor([float(weights.get(kind, 1.0)) for kind in content_types]) * (targets != -100)  # [B]
    return (per_question * scale).sum() / scale.sum().clamp_min(1e-8)


def pointer_loss(pointer_logits: torch.Tensor, terms: Sequence[str | None]) -> torch.Tensor:
    """Cross-entropy of the evidence pointer ``[B, K + 1]`` against the finding each question names.

    Questions whose finding is not known (``None``) do not count; a batch of only those gives 0.
    """
    targets = pointer_targets(list(terms))  # [B]
    if not bool((targets != -100).any()):
        return pointer_logits.sum() * 0.0
    return torch.nn.functional.cross_entropy(pointer_logits.float(), targets, ignore_index=-100)


def finetune(config: dict[str, Any]) -> Path:
    """Fine-tune, select the best epoch, save the checkpoint; returns the run folder."""
    run, train_cfg, vqa_cfg = Path(config["out"]), config["train"], config.get("vqa", {})
    engine.seed_everything(train_cfg.get("seed", 0))
    if train_cfg.get("deterministic", True):
        torch.use_deterministic_algorithms(True, warn_only=True)
    base_cfg = get_model_config(config["init"], config.get("model_overrides"))
    examples = load_examples(config["data"], base_cfg.preprocess.image_size)
    answers = vocabulary(examples, vqa_cfg.get("vocabulary", "train"))
    model = build_vqa_model(config["init"], answers, bool(vqa_cfg.get("gca", True)), config.get("model_overrides"))
    tokenizer = load_tokenizer(model.cfg.text)
    collate = VQACollator(model.cfg, tokenizer, views=vqa_cfg.get("views", "both"))
    loaders = {split: DataLoader(VQADataset(examples[split], answers), collate_fn=collate,
                                 batch_sampler=StudyGroupedSampler(examples[split], train_cfg["batch_size"],
                                                                   shuffle=split == "train", seed=train_cfg.get("seed", 0)))
               for split in ("train", "val", "test")}
    select_on_test = bool(config.get("selection", {}).get("select_on_test", False))
    protocol = LITERATURE if select_on_test else CLEAN
    optimizer = engine.build_optimizer(model, float(train_cfg["lr"]), float(train_cfg.get("weight_decay", 0.05)))
    # optional cap: a fixed budget of batches per epoch (ablations); the shuffled sampler picks which
    steps_per_epoch = min(len(loaders["train"]), int(train_cfg.get("steps_per_epoch") or len(loaders["train"])))
    total = int(train_cfg["epochs"]) * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, engine.warmup_cosine(
        total, int(train_cfg.get("warmup_steps", 0)), float(train_cfg.get("min_lr_ratio", 0.02))))
    log = engine.JsonlLog(run / "log.jsonl")
    log.path.unlink(missing_ok=True)
    save_resolved(config, run)
    best, best_state, step = (-1.0, -1), None, 0
    for epoch in range(int(train_cfg["epochs"])):
        model.train()
        batches = itertools.islice(loaders["train"], steps_per_epoch)
        for batch in tqdm(batches, total=steps_per_epoch, desc=f"vqa epoch {epoch + 1}", leave=False):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(train_cfg.get("bf16", False))):
                logits, pointer_logits = model.vqa_logits(batch, return_pointer=True)
            loss = answer_loss(logits, batch["answer_index"], batch["content_types"], vqa_cfg.get("loss_weights"))
            record = {}
            if pointer_logits is not None:  # the pointer learns which finding a question names
                pointing = pointer_loss(pointer_logits, batch["terms"])
                loss = loss + float(vqa_cfg.get("pointer_weight", 1.0)) * pointing
                record["pointer_loss"] = float(pointing.detach())
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            log.write({"step": step, "epoch": epoch, "loss": float(loss.detach()), "lr": optimizer.param_groups[0]["lr"],
                       **record})
        selection_split = "test" if select_on_test else "val"
        score = accuracy(examples[selection_split], predict(model, loaders[selection_split], answers))
        log.write({"step": step, "epoch": epoch, f"{selection_split}_accuracy": score})
        if score > best[0]:
            best, best_state = (score, epoch), copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    metrics = {"selection": protocol, "selection_split": "test" if select_on_test else "val",
               "selection_accuracy": best[0], "best_epoch": best[1] + 1, "answers": len(answers), "steps_per_epoch": steps_per_epoch,
               "vocabulary": vqa_cfg.get("vocabulary", "train"), "views": vqa_cfg.get("views", "both"),
               "gca": bool(vqa_cfg.get("gca", True)), "loss_weights": vqa_cfg.get("loss_weights") or {}}
    save_pretrained(model, run / "checkpoint", metrics={"vqa_finetune": metrics},
                    provenance={"data": config["data"], "init": str(config["init"])},
                    command=config.get("command", "python -m training.finetune_vqa"))
    engine.plot_curves(log.records(), run / "curves.png", f"VQA fine-tuning ({protocol.split(':')[0]})")
    return run


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (``python -m training.finetune_vqa``)."""
    args = common_parser(__doc__.splitlines()[0]).parse_args(argv)
    config = resolve(args)
    config["command"] = "python -m training.finetune_vqa " + " ".join(argv if argv is not None else [])
    try:
        finetune(config)
    except (CheckpointError, FileNotFoundError, ValueError, KeyError) as exc:
        raise SystemExit(f"finetune_vqa: {exc}") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
