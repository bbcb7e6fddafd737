"""Which view shows a finding? Image-only CNN probes on counterfactual phantom studies.

``python -m training.probe_views --studies 1600 --seconds 240 [--fill 0.55 0.65] [--views PA LL both]
[--term "pleural effusion" --severity small --zone Z]``;
``python -m training.probe_views --data DATA --question depth posterior`` probes a built dataset instead;
``--depth --term opacity`` renders studies that all carry the lesion and labels its depth.

Half the studies get the finding (default: a small, posterior-recess pleural effusion) on a random
side; every study also carries random other findings (the sampler's, without that term) so that
anatomy and disease vary.
A narrow ResNet-18 (the served tower's width) is trained on the first 75% with each view alone and
with both, for the same wall-clock budget, and its test AUC says how well that view shows the
effusion. A finding the lateral alone shows is what a multi-view model can gain from
(``docs/phantom.md``, "Which view shows a small effusion").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mvcm_core.data.findings import Finding
from mvcm_core.data.phantom import findings3d
from mvcm_core.data.phantom.render import render_study
from mvcm_core.data.phantom.sampler import sample_findings
from training.build_data import study_inputs

VIEW_SLOTS = {"PA": [0], "LL": [1], "both": [0, 1]}


def render_pairs(count: int, size: int, seed: int, fill: tuple[float, float],
                 finding: Finding | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``([count, 2, size, size] uint8 PA / LL inputs, [count] labels)``: odd rows carry ``finding``.

    ``finding`` defaults to a small pleural effusion; its side is drawn per study.
    """
    finding = finding or Finding("pleural effusion", severity="small", source="probe")
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 2, size, size), np.uint8)
    labels = np.arange(count) % 2
    saved, findings3d.SMALL_EFFUSION_FILL = findings3d.SMALL_EFFUSION_FILL, fill
    try:
        for row in tqdm(range(count), desc="render", unit="study"):
            findings = [f for f in sample_findings(rng) if f.term not in (finding.term, "normal")]
            if labels[row]:
                side = str(rng.choice(["left", "right"]))
                findings.append(dataclasses.replace(finding, side=side))
            study = render_study(findings, int(rng.integers(2**31)), max(size, 64))
            images[row] = study_inputs(study, size)  # as training.build_data makes model inputs
    finally:
        findings3d.SMALL_EFFUSION_FILL = saved
    return images, labels


def render_depth_pairs(count: int, size: int, seed: int, term: str = "opacity") -> tuple[np.ndarray, np.ndarray]:
    """``(inputs, labels)`` of studies that all carry one ``term`` lesion: label 1 = posterior, 0 = anterior.

    Lesions nearer the middle than :data:`~mvcm_core.data.vqa_phrases.DEPTH_MARGIN` are dropped, as the
    question generator drops them, so fewer than ``count`` studies come back.
    """
    from mvcm_core.data.vqa_phrases import DEPTH_MARGIN

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for _ in tqdm(range(count), desc="render", unit="study"):
        findings = [f for f in sample_findings(rng) if f.term not in (term, "normal")]
        findings.append(Finding(term, side=str(rng.choice(["left", "right"])), source="probe"))
        study = render_study(findings, int(rng.integers(2**31)), max(size, 64))
        depth = next(d["depth"] for d in study["meta"]["depths"] if d["term"] == term)
        if abs(depth) >= DEPTH_MARGIN:
            images.append(study_inputs(study, size))
            labels.append(int(depth > 0))
    return np.stack(images), np.array(labels)


def data_pairs(folder: str | Path, content_type: str, positive: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` of a built dataset's studies with a ``content_type`` question, shuffled.

    Label 1 = the study's first such question is answered ``positive`` (e.g. depth → "posterior").
    Every split is used: the probe asks what the images show, it does not evaluate the served model.
    """
    folder = Path(folder)
    answers: dict[str, str] = {}
    for record in json.loads((folder / "qa.json").read_text()):
        if record["content_type"] == content_type:
            answers.setdefault(record["study_id"], record["answer"])
    rows = [json.loads(line)["study_id"] for line in (folder / "studies.jsonl").read_text().splitlines() if line]
    index = np.array([i for i, study in enumerate(rows) if study in answers], dtype=int)
    if len(index) < 8:
        raise ValueError(f"{folder} has {len(index)} studies with a {content_type!r} question; the probe needs 8")
    index = np.random.default_rng(seed).permutation(index)
    size = int(json.loads((folder / "data_card.json").read_text())["size"])
    images = np.load(folder / f"images_{size}.npy", mmap_mode="r")
    labels = np.array([answers[rows[i]] == positive for i in index], dtype=int)
    return np.ascontiguousarray(images[index]), labels


class ViewProbe(torch.nn.Module):
    """A narrow ResNet-18 shared by the chosen views; their features concatenated → one logit."""

    def __init__(self, views: int) -> None:
        super().__init__()
        import timm

        self.trunk = timm.create_model("resnet18", num_classes=0, in_chans=1, channels=(32, 64, 128, 256),
                                       stem_width=32)
        self.head = torch.nn.Linear(self.trunk.num_features * views, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch, views = images.shape[:2]
        features = self.trunk(images.reshape(batch * views, 1, *images.shape[2:]))  # [B, V, H, W] -> [B*V, 1, H, W]
        return self.head(features.reshape(batch, -1)).squeeze(-1)  # [B*V, F] -> [B, V*F] -> [B]


def probe_auc(images: np.ndarray, labels: np.ndarray, view: str, seconds: float, seed: int = 0) -> dict[str, Any]:
    """Train a probe on the first 75% for ``seconds`` (cosine lr) and return its train / test AUC."""
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    pixels = torch.from_numpy(images[:, VIEW_SLOTS[view]]).float().div_(255.0).sub_(0.5).div_(0.25)
    targets = torch.from_numpy(labels.astype(np.float32))
    split = int(len(labels) * 0.75)
    model = ViewProbe(len(VIEW_SLOTS[view]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    started, steps = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - started) < seconds:
        batch = rng.permutation(split)[:32]
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * (1 + np.cos(np.pi * min(elapsed / seconds, 1.0)))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(pixels[batch]).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        scores = torch.cat([model(pixels[i:i + 128]).float() for i in range(0, len(labels), 128)]).numpy()
    return {"view": view, "steps": steps, "train_auc": round(float(roc_auc_score(labels[:split], scores[:split])), 3),
            "test_auc": round(float(roc_auc_score(labels[split:], scores[split:])), 3),
            "test_studies": len(labels) - split}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (``python -m training.probe_views``): prints one JSON line per view."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1600)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=240.0, help="training budget per view")
    parser.add_argument("--fill", type=float, nargs=2, default=findings3d.SMALL_EFFUSION_FILL,
                        help="small effusion level, as a fraction of recess floor -> dome crest")
    parser.add_argument("--views", nargs="+", choices=tuple(VIEW_SLOTS), default=["PA", "LL", "both"])
    parser.add_argument("--term", default="pleural effusion", help="the finding to probe")
    parser.add_argument("--severity", default="small", help="'none' for unspecified")
    parser.add_argument("--zone", default=None, help="e.g. retrocardiac")
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--data", help="probe a built dataset's images instead of rendering (with --question)")
    parser.add_argument("--question", nargs=2, default=("depth", "posterior"), metavar=("CONTENT_TYPE", "POSITIVE"),
                        help="with --data: the question type and the answer that counts as positive")
    parser.add_argument("--depth", action="store_true",
                        help="every study carries a --term lesion; the label is its depth (posterior vs anterior)")
    args = parser.parse_args(argv)
    if args.depth:
        images, labels = render_depth_pairs(args.studies, args.size, args.seed, args.term)
        setup = {"term": args.term, "label": "posterior", "studies": len(labels),
                 "positive_share": round(float(labels.mean()), 3)}
        for view in args.views:
            print(json.dumps({**setup, **probe_auc(images, labels, view, args.seconds)}), flush=True)
        return 0
    if args.data:
        images, labels = data_pairs(args.data, args.question[0], args.question[1], args.seed)
        setup = {"data": args.data, "question": args.question[0], "positive": args.question[1],
                 "studies": len(labels), "positive_share": round(float(labels.mean()), 3)}
        for view in args.views:
            print(json.dumps({**setup, **probe_auc(images, labels, view, args.seconds)}), flush=True)
        return 0
    if args.studies < 8:
        parser.error("--studies must be at least 8 (both labels in train and test)")
    severity = None if args.severity == "none" else args.severity
    finding = Finding(args.term, zone=args.zone, severity=severity, source="probe")
    images, labels = render_pairs(args.studies, args.size, args.seed, tuple(args.fill), finding)
    setup = {"term": args.term, "severity": severity, "zone": args.zone, "fill": list(args.fill)}
    for view in args.views:
        print(json.dumps({**setup, **probe_auc(images, labels, view, args.seconds)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
