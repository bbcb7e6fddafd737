"""The parts of a served checkpoint beyond its weights: calibration, OOD scorer, index, sample studies.

Used by :mod:`training.build_served`; each function takes a loaded model / predictor and the dataset
folder written by :mod:`training.build_data`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from mvcm_core.data.batching import image_batch
from mvcm_core.data.study_store import StudyStore


@torch.no_grad()
def vqa_logits_and_targets(model: torch.nn.Module, data_root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """VQA logits ``[Q, A]`` and answer indices ``[Q]`` (-100 = answer outside the vocabulary) of a split."""
    from mvcm_core.data.vqa_dataset import StudyGroupedSampler, VQACollator, VQADataset
    from mvcm_core.models.text import load_tokenizer
    from training.finetune_vqa import load_examples

    examples = load_examples({"kind": "mvcm-qa", "root": str(data_root)}, model.cfg.preprocess.image_size)[split]
    answers = list(model.cfg.heads.vqa_answers)
    loader = DataLoader(VQADataset(examples, answers), collate_fn=VQACollator(model.cfg, load_tokenizer(model.cfg.text)),
                        batch_sampler=StudyGroupedSampler(examples, 64, shuffle=False))
    model.eval()
    logits, targets = [], []
    for batch in loader:
        logits.append(model.vqa_logits(batch).float())
        targets.append(batch["answer_index"])
    return torch.cat(logits), torch.cat(targets)


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Temperature scaling (Guo et al. 2017) on held-out logits; returns T and the ECE before / after."""
    keep = targets >= 0
    logits, targets = logits[keep], targets[keep]
    log_t = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.detach().exp().clamp(0.05, 20.0))
    return {"temperature": temperature, "ece_before": expected_calibration_error(logits, targets),
            "ece_after": expected_calibration_error(logits / temperature, targets), "questions": int(keep.sum())}


def expected_calibration_error(logits: torch.Tensor, targets: torch.Tensor, bins: int = 15) -> float:
    """ECE of the top-1 probability over equal-width confidence bins."""
    confidence, predicted = logits.softmax(-1).max(-1)
    correct = (predicted == targets).float()
    edges = torch.linspace(0, 1, bins + 1)
    error = torch.zeros(())
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            error += inside.float().mean() * (confidence[inside].mean() - correct[inside].mean()).abs()
    return round(float(error), 4)


@torch.no_grad()
def study_features(model: torch.nn.Module, store: StudyStore, split: str, batch_size: int = 64) -> np.ndarray:
    """``[N, Dv]`` pooled view features (the OOD scorer's input) of every study of a split."""
    rows = store.indices(split)
    parts = []
    for start in range(0, len(rows), batch_size):
        views = [store.views(i) for i in rows[start:start + batch_size]]
        batch = image_batch([v for v, _ in views], [labels for _, labels in views], model.cfg)
        parts.append(model.encode_study(batch["images"], batch["view_ids"], batch["view_mask"])["study_features"])
    return torch.cat(parts).float().numpy()


def fit_ood(model: torch.nn.Module, data_root: Path, method: str = "mahalanobis", quantile: float = 0.99
            ) -> tuple[Any, dict[str, Any]]:
    """An OOD scorer fitted on train, thresholded on val; returns it with its in-distribution rates."""
    from mvcm_core.ood import OODScorer

    store = StudyStore.load(data_root, model.cfg.preprocess.image_size)
    scorer = OODScorer(method).fit(study_features(model, store, "train"))
    scorer.calibrate(study_features(model, store, "val"), quantile=quantile)
    test_rate = float(scorer.is_in_distribution(study_features(model, store, "test")).mean())
    return scorer, {"method": method, "quantile": quantile, "threshold": float(scorer.threshold),
                    "test_in_distribution": round(test_rate, 4)}


def report_records(data_root: Path) -> list[dict[str, Any]]:
    """One index record per distinct report of the dataset (verbatim text, findings, attribution)."""
    from mvcm_core.data.openi import OPENI_ATTRIBUTION

    card = json.loads((data_root / "data_card.json").read_text())
    attribution = card.get("provenance", {}).get("attribution", OPENI_ATTRIBUTION)
    licence = card.get("provenance", {}).get("licence", "")
    records: dict[str, dict[str, Any]] = {}
    for line in (data_root / "studies.jsonl").read_text().splitlines():
        row = json.loads(line)
        records.setdefault(row["report_uid"], {
            "report_uid": row["report_uid"], "text": row["text"], "findings": row["findings"],
            "split": row["split"], "attribution": f"{attribution} Licence: {licence}".strip(),
            "study_id": row["study_id"]})
    return list(records.values())


def pick_sample_studies(data_root: Path, count: int, lateral_only: int) -> list[dict[str, Any]]:
    """Test-split rows for the app's examples: one normal, ``lateral_only`` with findings only the
    lateral view shows, and the rest with distinct visible findings (deterministic)."""
    rows = [json.loads(line) for line in (data_root / "studies.jsonl").read_text().splitlines()]
    test = [r for r in rows if r["split"] == "test" and r["study_id"].endswith("-r0")]
    chosen: list[dict[str, Any]] = []
    normal = [r for r in test if not r["findings"] or {f["term"] for f in r["findings"]} == {"normal"}]
    chosen += normal[:1]
    lateral = [r for r in test if any(v["views"] == ["LL"] for v in r.get("visibility", []))]
    chosen += [r for r in lateral if r not in chosen][:lateral_only]
    seen_terms = {f["term"] for r in chosen for f in r["findings"]}
    for row in test:
        terms = {f["term"] for f in row["findings"]} - {"normal"}
        if len(chosen) >= count:
            break
        if terms and not terms & seen_terms and row not in chosen:
            chosen.append(row)
            seen_terms |= terms
    return chosen[:count]


def write_sample_studies(rows: list[dict[str, Any]], out: Path, size: int, anatomies: int) -> list[str]:
    """Render the chosen studies as DICOM folders (PA.dcm, LL.dcm, report.txt, findings.json)."""
    from mvcm_core.data.findings import Finding
    from mvcm_core.data.phantom.dataset import StudySpec, write_study

    written = []
    for row in rows:
        spec = StudySpec(row["report_uid"], row["render_seed"], [Finding.from_dict(f) for f in row["findings"]],
                         row["text"], "", f"openi:{row['report_uid']}", row["split"])
        write_study(out, spec, size=size, pool=anatomies)
        for preview in ("PA.png", "LL.png"):  # the DICOMs are the examples; previews would only duplicate them
            (out / spec.study_id / preview).unlink(missing_ok=True)
        written.append(spec.study_id)
    return written
