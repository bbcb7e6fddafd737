"""Fine-tuning ablation matrix → one Markdown table (``python -m training.ablate_finetune --init CKPT --data DATA``).

Rows (each over ``--seeds`` seeds, reported as mean ± half the min–max spread, on the test split,
models selected on validation):

* views: both (multi-view) vs frontal only vs lateral only — overall and view-dependent accuracy;
* the GCA answer-vocabulary prior on vs off;
* adapters (ViT adapters, frozen trunk) vs full fine-tuning of the image encoder;
* adapters and full fine-tuning of the image trunk against the base config's (``--set`` it, e.g. frozen);
* ``--pretrain-config``: each pretraining objective switched off alone (re-pretrains per row for
  ``--pretrain-steps``, then fine-tunes like every other row).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.evaluate import main as evaluate_main
from training.finetune_vqa import finetune
from training.params import apply_overrides, load_yaml

METRICS = ("overall", "closed", "open", "view-dependent", "lateral-view", "frontal-view", "both-views", "depth")


def summarise(result: dict[str, Any]) -> dict[str, float]:
    """The table's numbers from an evaluate.py VQA result."""
    vqa = result["vqa"]
    by_view = vqa.get("by_required_view", {})
    dependent = [by_view[v] for v in ("frontal", "lateral", "both") if v in by_view]
    answered = sum(v["n"] for v in dependent)
    return {"view-dependent": sum(v["accuracy"] * v["n"] for v in dependent) / answered if answered else float("nan"),
            "overall": vqa["overall"]["accuracy"], "closed": vqa["conventions"]["yes_no"]["closed"]["accuracy"],
            "open": vqa["conventions"]["yes_no"]["open"]["accuracy"],
            "lateral-view": by_view.get("lateral", {}).get("accuracy", float("nan")),
            "frontal-view": by_view.get("frontal", {}).get("accuracy", float("nan")),
            "both-views": by_view.get("both", {}).get("accuracy", float("nan")),
            "depth": vqa.get("by_content_type", {}).get("depth", {}).get("accuracy", float("nan"))}


def run_variant(name: str, base: dict[str, Any], changes: dict[str, Any], seeds: Sequence[int], root: Path,
                reuse: bool = False) -> list[dict[str, float]]:
    """Fine-tune + evaluate one variant for every seed (``reuse``: keep a seed's finished evaluation)."""
    scores = []
    for seed in seeds:
        out = root / f"{name}-seed{seed}" / "eval_test.json"
        if reuse and out.is_file():  # a stopped matrix resumes, and rows run in parallel processes merge
            scores.append(summarise(json.loads(out.read_text())))
            continue
        config = copy.deepcopy(base)
        for key, value in changes.items():
            section, _, leaf = key.partition(".")
            config.setdefault(section, {})[leaf] = value
        config["train"]["seed"] = seed
        config["out"] = str(root / f"{name}-seed{seed}")
        run = finetune(config)
        evaluate_main(["--checkpoint", str(run / "checkpoint"), "--task", "vqa", "--split", "test",
                       "--data", config["data"]["root"], "--kind", config["data"].get("kind", "mvcm-qa"),
                       "--views", config["vqa"].get("views", "both"), "--out", str(out)])
        scores.append(summarise(json.loads(out.read_text())))
    return scores


def cell(values: list[float]) -> str:
    """``mean ± half-spread`` in percent."""
    values = [v for v in values if v == v]
    if not values:
        return "–"
    mean = statistics.fmean(values)
    spread = (max(values) - min(values)) / 2
    return f"{100 * mean:.1f} ± {100 * spread:.1f}"


def table(rows: list[tuple[str, list[dict[str, float]] | str]]) -> str:
    """One Markdown table, a row per variant."""
    lines = ["| variant | seeds | " + " | ".join(METRICS) + " |", "|" + " --- |" * (len(METRICS) + 2)]
    for name, scores in rows:
        if isinstance(scores, str):  # a row this model cannot run, with the reason
            lines.append(f"| {name} | 0 | n/a: {scores} |" + " – |" * (len(METRICS) - 1))
            continue
        lines.append(f"| {name} | {len(scores)} | " + " | ".join(cell([s.get(m, float("nan")) for s in scores]) for m in METRICS) + " |")
    return "\n".join(lines)


FINETUNE_VARIANTS: dict[str, dict[str, Any]] = {
    "multi-view (both)": {"vqa.views": "both"},
    "frontal only": {"vqa.views": "frontal"},
    "lateral only": {"vqa.views": "lateral"},
    "GCA off": {"vqa.gca": False},
    "ViT adapters (frozen trunk)": {"model_overrides.vision": {"trainable": "adapters"}},
    "full fine-tuning of the trunk": {"model_overrides.vision": {"trainable": "full"}},
}


def unsupported(base: dict[str, Any], changes: dict[str, Any]) -> str | None:
    """Why the ``--init`` checkpoint's model cannot take a variant (checked before training), else None."""
    from mvcm_core.models.vision import is_vit_name

    if (changes.get("model_overrides.vision") or {}).get("trainable") != "adapters":
        return None
    timm_name = json.loads((Path(base["init"]) / "config.json").read_text())["model"]["vision"]["timm_name"]
    return None if is_vit_name(timm_name) else f"vision adapters need a ViT (this tower: {timm_name})"


def attempt(name: str, base: dict[str, Any], changes: dict[str, Any], seeds: Sequence[int], root: Path,
            reuse: bool = False) -> list[dict[str, float]] | str:
    """:func:`run_variant`, or the one-line reason when the model cannot take the variant."""
    return unsupported(base, changes) or run_variant(name, base, changes, seeds, root, reuse)


def pretrain_variant(resolved: dict[str, Any], loss: str | None, data: str, steps: int, seed: int, root: Path
                     ) -> Path:
    """Pretrain once from the ``resolved`` config with ``loss`` switched off (None: all on); returns the checkpoint."""
    from training.pretrain import train

    config = copy.deepcopy(resolved)
    if loss is not None:
        config["losses"][loss]["weight"] = 0.0
    config["data"] = {**config.get("data", {}), "root": data}
    config["train"] = {**config["train"], "steps": steps, "seed": seed, "checkpoint_every": 0}
    config["out"] = str(root / f"pretrain-{'all' if loss is None else 'no-' + loss}")
    return train(config) / "checkpoint"


def objective_rows(args: argparse.Namespace, base: dict[str, Any], root: Path
                   ) -> list[tuple[str, list[dict[str, float]] | str]]:
    """One row per pretraining objective switched off (plus all on): re-pretrain, then fine-tune as ``base``."""
    pretrain_config = apply_overrides(load_yaml(args.pretrain_config), args.pretrain_overrides)
    losses = [name for name, params in pretrain_config["losses"].items()
              if float((params or {}).get("weight", 0)) > 0]
    rows = []
    for loss in [None, *losses]:
        if args.only and (loss or "all") not in args.only:
            continue
        init = pretrain_variant(pretrain_config, loss, args.data, args.pretrain_steps, args.seeds[0], root)
        name = "pretrain: all objectives" if loss is None else f"pretrain: no {loss}"
        rows.append((name, run_variant(name.split(" ")[-1], {**base, "init": str(init)}, {}, args.seeds, root,
                                       args.reuse)))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Run the matrix and write ``ablation.md``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", required=True, help="pretrained checkpoint folder")
    parser.add_argument("--data", required=True)
    parser.add_argument("--config", default="finetune_vqa")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override the fine-tuning config of every row (e.g. the served recipe's frozen trunk)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, help="override the fine-tuning epochs")
    parser.add_argument("--steps-per-epoch", type=int, help="cap the fine-tuning batches per epoch (same budget per row)")
    parser.add_argument("--only", nargs="+", help="rows to run: fine-tuning rows by full name, objective rows by loss name or 'all' (default: every row)")
    parser.add_argument("--pretrain-config", help="also re-pretrain with each objective of this config off")
    parser.add_argument("--pretrain-steps", type=int, default=300, help="pretraining steps per objective row")
    parser.add_argument("--pretrain-set", dest="pretrain_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override the pretraining config of the objective rows (e.g. model=mvcm-tiny-cnn)")
    parser.add_argument("--out", default="runs/ablation_finetune")
    parser.add_argument("--reuse", action="store_true",
                        help="keep every row-seed whose eval_test.json exists under --out (resume; merge parallel runs)")
    args = parser.parse_args(argv)
    base = apply_overrides(load_yaml(args.config), args.overrides)
    base["init"], base["data"] = args.init, {**base.get("data", {}), "root": args.data}
    if args.epochs:
        base["train"]["epochs"] = args.epochs
    if args.steps_per_epoch:
        base["train"]["steps_per_epoch"] = args.steps_per_epoch
    root = Path(args.out)
    rows = [(name, attempt(name.split(" ")[0], base, changes, args.seeds, root, args.reuse))
            for name, changes in FINETUNE_VARIANTS.items() if not args.only or name in args.only]
    if args.pretrain_config:
        rows += objective_rows(args, base, root)
    budget = f"{base['train']['epochs']} epoch(s)" + (f" × {args.steps_per_epoch} steps" if args.steps_per_epoch else "")
    markdown = (f"# Fine-tuning ablation (test split, selection on validation, seeds {args.seeds}, {budget})\n\n"
                f"Overrides of every row: {args.overrides or 'none'}. Cells: mean ± half the min–max spread.\n\n"
                f"{table(rows)}\n")
    root.mkdir(parents=True, exist_ok=True)
    (root / "ablation.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
