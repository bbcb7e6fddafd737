"""Evaluate a checkpoint: ``python -m training.evaluate --checkpoint DIR --task vqa|retrieval --split val|test
--data DATA --out metrics.json``.

VQA: accuracy open / closed / overall under both conventions (dataset ``answer_type``; closed ⇔
yes/no), per question type, required view and finding, beside majority baselines fitted on train,
the out-of-vocabulary ceiling and the most frequent confusions. Retrieval: study → report and
report → study Recall@K (duplicate-aware) and label Precision@K for ITC ranking and for ITC top-k
re-ranked by ITM, beside random and label-prior baselines. Plots and a Markdown summary are written
beside the metrics; every output carries the checkpoint's model-selection protocol.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from mvcm_core.checkpoint import CheckpointError, load_pretrained
from mvcm_core.eval import (
    direction_report,
    majority_baselines,
    metrics_markdown,
    out_of_vocabulary,
    plot_confusions,
    plot_per_finding_accuracy,
    plot_recall_curve,
    rerank,
    retrieval_report,
    top_confusions,
    topk_candidates,
    vqa_accuracy,
)
from mvcm_core.eval.retrieval_metrics import label_precision_at_k
from mvcm_core.models.text import load_tokenizer
from mvcm_core.report_scoring import (
    FINDINGS_WEIGHTS,
    ReportScoring,
    choose_weights,
    findings_log_likelihood,
    hub_scores,
)
from training.finetune_vqa import load_examples, predict


def protocol_of(model: torch.nn.Module) -> str:
    """The model-selection protocol recorded in the checkpoint (every output repeats it)."""
    finetune = model.manifest.get("metrics", {}).get("vqa_finetune", {})
    return finetune.get("selection", "no fine-tuning selection recorded (pretrained checkpoint)")


def evaluate_vqa(model: torch.nn.Module, data: dict[str, Any], split: str, out: Path, views: str) -> dict[str, Any]:
    """VQA metrics of one split with baselines, confusions and plots."""
    from mvcm_core.data.vqa_dataset import StudyGroupedSampler, VQACollator, VQADataset

    examples = load_examples(data, model.cfg.preprocess.image_size)
    answers = list(model.cfg.heads.vqa_answers)
    collate = VQACollator(model.cfg, load_tokenizer(model.cfg.text), views=views)
    loader = DataLoader(VQADataset(examples[split], answers), collate_fn=collate,
                        batch_sampler=StudyGroupedSampler(examples[split], 64, shuffle=False))
    predictions = predict(model, loader, answers)
    records = [e.record() for e in examples[split]]
    answers_only = {qid: p["answer"] for qid, p in predictions.items()}
    metrics = vqa_accuracy(records, answers_only)
    baselines = majority_baselines([e.record() for e in examples["train"]], records)
    confusions = top_confusions(records, answers_only)
    protocol = protocol_of(model)
    plot_per_finding_accuracy(metrics, baselines, out.with_name(out.stem + "_per_finding.png"), protocol)
    plot_confusions(confusions, out.with_name(out.stem + "_confusions.png"), protocol)
    return {"vqa": metrics, "baselines": baselines, "confusions": confusions,
            "out_of_vocabulary": out_of_vocabulary(records, answers), "views": views}


@torch.no_grad()
def embed_split(model: torch.nn.Module, data: dict[str, Any], split: str, with_text: bool = True) -> dict[str, Any]:
    """Study and report embeddings + tokens (+ findings probabilities) of every study of a split."""
    from mvcm_core.data.batching import image_batch
    from mvcm_core.data.study_store import StudyStore

    store = StudyStore.load(data["root"], model.cfg.preprocess.image_size)
    rows = store.indices(split)
    tokenizer = load_tokenizer(model.cfg.text)
    wanted = ("image_embeds", "text_embeds", "image_tokens", "image_token_mask", "text_tokens", "text_token_mask",
              "findings_probs")
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(rows), 64):
        chunk = rows[start:start + 64]
        views = [store.views(i) for i in chunk]
        batch = image_batch([v for v, _ in views], [labels for _, labels in views], model.cfg)
        outputs = model.encode_study(batch["images"], batch["view_ids"], batch["view_mask"])
        if with_text:
            encoded = tokenizer([store.rows[i]["text"] for i in chunk], padding="max_length", truncation=True,
                                max_length=model.cfg.text.max_length, return_tensors="pt")
            outputs |= model.encode_text(encoded["input_ids"], encoded["attention_mask"])
        if "findings_logits" in outputs:
            outputs["findings_probs"] = torch.sigmoid(outputs["findings_logits"].float())
        for key in wanted:
            if key in outputs:
                parts.setdefault(key, []).append(outputs[key])
    out = {key: torch.cat(value) for key, value in parts.items()}
    out["groups"] = np.asarray([store.rows[i]["group_id"] for i in rows])
    out["labels"] = np.asarray([store.rows[i]["labels"] for i in rows], dtype=np.float32)
    out["train_labels"] = store.label_matrix(store.indices("train"))
    return out


@torch.no_grad()
def itm_rerank_scores(model: torch.nn.Module, e: dict[str, Any], topk: np.ndarray, image_queries: bool) -> np.ndarray:
    """ITM match logit + ITC similarity for every (query, top-k candidate) pair (MVCM's re-ranking)."""
    scores = np.zeros(topk.shape, dtype=np.float32)
    for q in range(topk.shape[0]):
        candidates = torch.as_tensor(topk[q])
        images = candidates if not image_queries else torch.full_like(candidates, q)
        texts = candidates if image_queries else torch.full_like(candidates, q)
        logits = model.itm_logits(e["text_tokens"][texts], e["text_token_mask"][texts],
                                  e["image_tokens"][images], e["image_token_mask"][images])
        similarity = (e["image_embeds"][images] * e["text_embeds"][texts]).sum(-1)
        scores[q] = (logits[:, 1] - logits[:, 0] + similarity).float().numpy()
    return scores


def _numpy(e: dict[str, Any], key: str) -> np.ndarray | None:
    return e[key].float().numpy() if key in e else None


SCORING_CACHE = "report_scoring_selection.npz"  # beside the metrics: evaluate writes it, package reuses it


def _selection_key(model: torch.nn.Module, data: dict[str, Any], neighbours: int) -> str:
    """What a cached selection depends on: the weights' sha256, the data folder and the neighbour count."""
    weights = getattr(model, "manifest", {}).get("files", {}).get("model.safetensors", "")
    return json.dumps([weights, str(Path(data["root"]).resolve()), neighbours]) if weights else ""


def select_report_scoring(model: torch.nn.Module, data: dict[str, Any], neighbours: int = 10,
                          cache: Path | None = None) -> tuple[ReportScoring, np.ndarray]:
    """Choose the study → report scoring weights on validation (label overlap P@5; reference: train studies).

    Args:
        cache: an ``.npz`` to reuse (when it was written for the same weights, data and neighbours) or
            to write; the choice embeds every training study, about a minute on 2 cores.

    Returns:
        ``(scoring of the validation reports, [M, E] training study embeddings)``; reuse the weights and
        the reference embeddings for any other gallery (:func:`scoring_for`).
    """
    key = _selection_key(model, data, neighbours)
    if cache is not None and key and cache.is_file():
        with np.load(cache) as saved:
            if str(saved["key"]) == key:
                chosen = ReportScoring.from_json(json.loads(str(saved["scoring"])))
                return chosen, saved["reference"]
    reference = embed_split(model, data, "train", with_text=False)["image_embeds"].float().numpy()
    val = embed_split(model, data, "val")
    image, text, probs = _numpy(val, "image_embeds"), _numpy(val, "text_embeds"), _numpy(val, "findings_probs")
    hub = hub_scores(reference, text, neighbours)
    loglik = findings_log_likelihood(probs, val["labels"]) if probs is not None else np.zeros((len(image),) * 2)

    def overlap_p5(scores: np.ndarray) -> float:
        return label_precision_at_k(scores, val["labels"], val["labels"], (5,), "overlap")["P@5"]

    weights = (0.0,) if probs is None else FINDINGS_WEIGHTS
    hub_weight, findings_weight, grid = choose_weights(image @ text.T, hub, loglik, overlap_p5,
                                                       findings_weights=weights)
    selection = {"split": "val", "metric": "study→report label overlap P@5", "reference": "train studies",
                 "reference_count": len(reference), "grid": grid}
    chosen = ReportScoring(hub, hub_weight, findings_weight, neighbours, selection)
    if cache is not None and key:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, key=key, scoring=json.dumps(chosen.to_json()), reference=reference)
    return chosen, reference


def scoring_for(chosen: ReportScoring, reference: np.ndarray, gallery: np.ndarray) -> ReportScoring:
    """``chosen``'s weights with hub scores computed for another gallery ``[N, E]``."""
    return ReportScoring(hub_scores(reference, gallery, chosen.neighbours), chosen.hub_weight,
                         chosen.findings_weight, chosen.neighbours, chosen.selection)


def evaluate_retrieval(model: torch.nn.Module, data: dict[str, Any], split: str, out: Path, k: int) -> dict[str, Any]:
    """Retrieval metrics with baselines and a recall plot: ITC, ITC top-k re-ranked by ITM (``itm_rerank``)
    and, study → report, ITC + hub penalty + findings likelihood with weights chosen on val (``scored``)."""
    e = embed_split(model, data, split)
    image, text = e["image_embeds"].float().numpy(), e["text_embeds"].float().numpy()
    report = retrieval_report(image, text, e["groups"], e["labels"], prior_labels=e["train_labels"])
    similarity = image @ text.T  # [N studies, N reports]
    for direction, matrix, image_queries in (("i2t", similarity, True), ("t2i", similarity.T, False)):
        topk = topk_candidates(matrix, min(k, matrix.shape[1]))
        scores, _ = rerank(matrix, topk, itm_rerank_scores(model, e, topk, image_queries))
        report[direction]["itm_rerank"] = direction_report(scores, e["groups"], e["groups"], e["labels"], e["labels"])
    chosen, reference = select_report_scoring(model, data, cache=out.with_name(SCORING_CACHE))
    scoring = scoring_for(chosen, reference, text)
    scored = scoring.scores(similarity, _numpy(e, "findings_probs"), e["labels"])
    report["i2t"]["scored"] = direction_report(scored, e["groups"], e["groups"], e["labels"], e["labels"])
    plot_recall_curve(report, out.with_name(out.stem + "_recall.png"), protocol_of(model))
    scoring_summary = {key: getattr(scoring, key) for key in ("hub_weight", "findings_weight", "neighbours", "selection")}
    if split == "val":
        scoring_summary["warning"] = "weights chosen on this same split: the scored row is in-sample"
    return {"retrieval": report, "report_scoring": scoring_summary, "rerank_k": k, "studies": len(e["groups"])}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (``python -m training.evaluate``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--task", choices=("vqa", "retrieval"), required=True)
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--data", required=True, help="dataset folder (mvcm-qa) or a public dataset root")
    parser.add_argument("--kind", default="mvcm-qa", help="dataset kind for VQA (mvcm-qa or a reader name)")
    parser.add_argument("--views", choices=("both", "frontal", "lateral"), default="both")
    parser.add_argument("--rerank-k", type=int, default=16)
    parser.add_argument("--out", required=True, help="metrics JSON path (plots and .md are written beside it)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        model = load_pretrained(args.checkpoint)
    except CheckpointError as exc:
        raise SystemExit(f"evaluate: {exc}") from None
    data = {"kind": args.kind, "root": args.data}
    protocol = protocol_of(model)
    if args.task == "vqa":
        result = evaluate_vqa(model, data, args.split, out, args.views)
        markdown = metrics_markdown(vqa=result["vqa"], baselines=result["baselines"], protocol=protocol,
                                    oov=result["out_of_vocabulary"])
    else:
        result = evaluate_retrieval(model, data, args.split, out, args.rerank_k)
        markdown = metrics_markdown(retrieval=result["retrieval"], protocol=protocol)
        if "warning" in result["report_scoring"]:
            markdown += f"\n**Scored row:** {result['report_scoring']['warning']}.\n"
    result.update(protocol=protocol, split=args.split, checkpoint=str(args.checkpoint), task=args.task)
    out.write_text(json.dumps(result, indent=1, default=float))
    out.with_suffix(".md").write_text(f"# {args.task} on {args.split} ({protocol})\n\n{markdown}\n")
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
