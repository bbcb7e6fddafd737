"""Assemble the served checkpoint folder, its model card, sample studies and the assets manifest."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mvcm_core.checkpoint import load_pretrained, save_pretrained
from training import served_parts
from training.evaluate import SCORING_CACHE, scoring_for, select_report_scoring

LICENCES = {
    "weights": "derived from Open-I reports (CC BY-NC-ND 4.0) and simulated images; MiniLM text encoder "
               "(Apache-2.0, not copied: referenced by sha256); for teaching and demonstration only",
    "reports": "Open-I reports, CC BY-NC-ND 4.0, verbatim with attribution",
    "simulated": "simulated by the MVCM phantom (project code); findings from Open-I reports (CC BY-NC-ND 4.0)",
}


def _folder_bytes(folder: Path, prefix: str) -> dict[str, bytes]:
    return {f"{prefix}/{p.relative_to(folder)}": p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _study_to_report(block: dict[str, Any], prefix: str = "") -> dict[str, float]:
    precision = block["precision"]
    return {f"{prefix}R@5": round(block["recall"]["R@5"], 4),
            f"{prefix}label_P@5_overlap": round(precision["overlap"]["P@5"], 4),
            f"{prefix}label_P@5_exact": round(precision["exact"]["P@5"], 4)}


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures the card, the manifest and the app's About tab show."""
    vqa = metrics["vqa_test"]["vqa"]["conventions"]["dataset"]
    majority = metrics["vqa_test"]["baselines"]["question_majority"]["metrics"]["conventions"]["dataset"]
    retrieval = metrics["retrieval_test"]["retrieval"]["i2t"]
    study_to_report = {**_study_to_report(retrieval["model"]),
                       "random_R@5": round(retrieval["random"]["recall"]["R@5"], 4)}
    if "scored" in retrieval:
        study_to_report.update(_study_to_report(retrieval["scored"], "scored_"))
    return {
        "vqa_test": {k: round(vqa[k]["accuracy"], 4) for k in ("open", "closed", "overall")},
        "vqa_test_question_majority": {k: round(majority[k]["accuracy"], 4) for k in ("open", "closed", "overall")},
        "retrieval_test_study_to_report": study_to_report,
    }


def model_card(config: dict[str, Any], summary: dict[str, Any], eval_dir: Path, timing: str, command: str) -> str:
    """``MODEL_CARD.md``: use, data and licences, metrics beside baselines, limitations, how to rebuild."""
    sections = [(eval_dir / f"{name}.md").read_text() for name in ("vqa_test", "retrieval_test")
                if (eval_dir / f"{name}.md").is_file()]
    return "\n".join([
        f"# {config['name']}: MVCM teaching model (simulated chest radiographs + real Open-I reports)", "",
        "**Intended use: teaching and demonstration of multi-view vision-language methods. Not a medical "
        "device; never use it for diagnosis.**", "",
        "## Training data and licences",
        "- Reports: Open-I (Indiana University chest X-ray collection), CC BY-NC-ND 4.0; R2Gen split; "
        "model selection on a validation split carved from train; never trained on test.",
        "- Images: physically simulated PA + lateral radiographs of a 3-D phantom driven by each report's "
        "MeSH findings (see docs/phantom.md). No real patient image was used.",
        "- Text encoder: all-MiniLM-L6-v2 (Apache-2.0), frozen, referenced by sha256.", "",
        "## Headline figures (test split)", "```json", json.dumps(summary, indent=1), "```", "",
        "## Detailed metrics", *sections, "",
        "## Limitations",
        "- Trained on simulated images only: on real radiographs the answers are meaningless; the app flags "
        "studies unlike the training distribution (Mahalanobis OOD score on the study features).",
        "- 128-pixel inputs: findings whose sign is finer than two pixels (granulomas, fractures, "
        "degenerative spine, scarring, osteopenia; `unresolved_at_size` in the data card) get no question; "
        "they stay in the reports, so retrieval still sees them.",
        "- Answers are classifications over the training answer vocabulary; probabilities are "
        "temperature-calibrated on validation.", "",
        "## Rebuild", f"`{command}` (deterministic for a seed; 2 CPU cores). Time per stage:", "", timing, ""])


def package(config: dict[str, Any], built: dict[str, Any], timer: Any, command: str) -> Path:
    """Write ``config['dest']`` (checkpoint + extras), the sample studies and the assets manifest."""
    from mvcm_core.inference import CALIBRATION_NAME, INDEX_NAME, OOD_NAME, Predictor, build_report_index

    data_root, work = Path(built["data_root"]), Path(config["work"])
    model = load_pretrained(built["checkpoint"])
    calibration = served_parts.fit_temperature(*served_parts.vqa_logits_and_targets(model, data_root, "val"))
    scorer, ood = served_parts.fit_ood(model, data_root, **config.get("ood", {}))
    index = build_report_index(Predictor(model, Path(built["checkpoint"])), served_parts.report_records(data_root))
    chosen, reference = select_report_scoring(model, {"root": str(data_root)}, cache=work / "eval" / SCORING_CACHE)
    index.scoring = scoring_for(chosen, reference, np.asarray(index.embeddings)).to_json()
    summary = {**headline(built["metrics"]), "calibration": calibration, "ood": ood, "index_reports": len(index),
               "vqa_selection": model.manifest.get("metrics", {}).get("vqa_finetune", {})}
    extra: dict[str, bytes] = {CALIBRATION_NAME: json.dumps(calibration, indent=1).encode()}
    with tempfile.TemporaryDirectory() as scratch:
        extra[OOD_NAME] = scorer.save(Path(scratch) / OOD_NAME).read_bytes()
        extra.update(_folder_bytes(index.save(Path(scratch) / INDEX_NAME), INDEX_NAME))
    eval_dir = work / "eval"
    extra.update({f"eval/{p.name}": p.read_bytes() for p in sorted(eval_dir.glob("*"))
                  if p.suffix in (".md", ".png") or p.name.endswith("_test.json")})
    extra["MODEL_CARD.md"] = model_card(config, summary, eval_dir, timer.table(), command).encode()
    dest = Path(config["dest"])
    card = json.loads((data_root / "data_card.json").read_text())
    save_pretrained(model, dest, provenance={"data": card.get("provenance", {}), "seed": config.get("seed", 0),
                                             "build_config": config},
                    metrics={**summary, "build_seconds": timer.seconds}, command=command, extra_files=extra)
    studies = config.get("studies", {})
    if studies.get("count", 0):
        rows = served_parts.pick_sample_studies(data_root, studies["count"], studies.get("lateral_only", 2))
        served_parts.write_sample_studies(rows, Path(studies["out"]), studies.get("size", 256),
                                          config["data"].get("anatomies", 64))
    if config.get("assets_manifest"):
        write_assets_manifest(Path(config["assets_manifest"]))
    return dest


def write_assets_manifest(path: Path) -> Path:
    """List every file under the manifest's folder with size, sha256, provenance and licence."""
    root = path.parent
    entries = []
    for file in sorted(p for p in root.rglob("*") if p.is_file() and p != path):
        relative = file.relative_to(root).as_posix()
        if relative.startswith("checkpoints/"):
            provenance, licence = "python -m training.build_served (see the checkpoint's manifest.json)", LICENCES["weights"]
        elif relative.startswith("studies/"):
            provenance, licence = "python -m training.build_served: test-split Open-I report rendered by the phantom", \
                LICENCES["simulated"] if not file.name.startswith("report") else LICENCES["reports"]
        else:
            provenance, licence = "project file (see assets/README.md)", "Apache-2.0 (this project)"
        entries.append({"path": relative, "bytes": file.stat().st_size,
                        "sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
                        "provenance": provenance, "licence": licence})
    total = sum(e["bytes"] for e in entries)
    path.write_text(json.dumps({"total_bytes": total, "files": entries}, indent=1) + "\n")
    return path
