"""Build the served checkpoint from nothing: ``python -m training.build_served [--config served]``.

Stages (each timed; a summary of where the time went is printed at the end and kept in the manifest):
Open-I reports → phantom dataset → image warm-up → pretraining → position warm-up (optional) → retrieval fine-tuning → VQA fine-tuning (from the
retrieval checkpoint, selected on validation) → evaluation on the test split (VQA and retrieval of the
served model itself) → answer calibration on validation → OOD scorer (fitted on train, threshold on
validation) → report index → sample studies → ``<dest>/`` (config, safetensors, ``ood.npz``,
``calibration.json``, ``index/``, ``eval/``, ``MODEL_CARD.md``, manifest with the sha256 of every file,
the command and the git revision). Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from training.params import apply_overrides, deep_merge, load_yaml

STAGES = ("data", "image warm-up", "pretrain", "position warm-up", "retrieval", "vqa", "evaluate", "package")


class StageTimer:
    """Wall-clock seconds per stage, printed as a table."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time one stage and announce it."""
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 1)
            print(f"=== {name}: {self.seconds[name]:.0f} s ===", flush=True)

    def table(self) -> str:
        """Markdown table of the stages and their share of the total."""
        total = sum(self.seconds.values()) or 1.0
        lines = ["| stage | seconds | share |", "| --- | ---: | ---: |"]
        lines += [f"| {name} | {s:.0f} | {100 * s / total:.0f}% |" for name, s in self.seconds.items()]
        return "\n".join(lines + [f"| total | {total:.0f} ({total / 60:.1f} min) | 100% |"])


def stage_config(spec: dict[str, Any], **forced: Any) -> dict[str, Any]:
    """A training entry point's config: its YAML, the served config's overrides, then forced paths."""
    config = deep_merge(load_yaml(spec["config"]), copy.deepcopy(spec.get("overrides") or {}))
    return deep_merge(config, forced)


def reusable(run: Path, config: dict[str, Any]) -> bool:
    """With ``reuse: true`` a stage whose checkpoint is complete is not run again (resume a stopped build)."""
    done = (run / "checkpoint" / "manifest.json").is_file()
    if done and config.get("reuse", False):
        print(f"reusing {run / 'checkpoint'} (reuse: true)", flush=True)
        return True
    return False


def run_stages(config: dict[str, Any], timer: StageTimer, command: str) -> dict[str, Any]:
    """Run every stage; returns the metrics gathered on the way."""
    from training.build_data import build_dataset
    from training.finetune_vqa import finetune
    from training.pretrain import train

    work, seed = Path(config["work"]), int(config.get("seed", 0))
    data_root = work / "data"
    with timer.stage("data"):
        if not (config.get("reuse", False) and (data_root / "data_card.json").is_file()):
            build_dataset(data_root, seed=seed, **config["data"])
    data_spec = {"root": str(data_root), "split": "train"}
    seeded = {"train": {"seed": seed}}
    pretrain, retrieval, vqa = work / "pretrain", work / "retrieval", work / "vqa"
    start: dict[str, str] = {}
    if config.get("image_warmup"):  # the image tower alone on the report findings first
        warmup = work / "image_warmup"
        with timer.stage("image warm-up"):
            if not reusable(warmup, config):
                train(stage_config(config["image_warmup"], data=data_spec, out=str(warmup), **seeded, command=command))
        start = {"init": str(warmup / "checkpoint")}
    with timer.stage("pretrain"):
        if not reusable(pretrain, config):
            train(stage_config(config["pretrain"], data=data_spec, out=str(pretrain), **seeded, **start,
                               command=command))
    before_retrieval = pretrain / "checkpoint"
    if config.get("position_warmup"):  # the image tower learns where findings lie before retrieval aligns it
        positions = work / "position_warmup"
        with timer.stage("position warm-up"):
            if not reusable(positions, config):
                train(stage_config(config["position_warmup"], data=data_spec, out=str(positions),
                                   model=str(before_retrieval), init=str(before_retrieval), **seeded, command=command))
        before_retrieval = positions / "checkpoint"
    with timer.stage("retrieval"):
        if not reusable(retrieval, config):
            train(stage_config(config["retrieval"], data=data_spec, out=str(retrieval), model=str(before_retrieval),
                               init=str(before_retrieval), **seeded, command=command))
    with timer.stage("vqa"):
        if not reusable(vqa, config):
            finetune(stage_config(config["vqa"], init=str(retrieval / "checkpoint"), out=str(vqa),
                                  data={"kind": "mvcm-qa", "root": str(data_root)}, **seeded, command=command))
    with timer.stage("evaluate"):
        metrics = evaluate_served(vqa / "checkpoint", data_root, work / "eval", int(config.get("rerank_k", 16)))
    return {"metrics": metrics, "checkpoint": vqa / "checkpoint", "data_root": data_root}


def evaluate_served(checkpoint: Path, data_root: Path, out: Path, rerank_k: int) -> dict[str, Any]:
    """Test-split VQA and retrieval metrics of the served model (and VQA on validation)."""
    from training.evaluate import main as evaluate_main

    results = {}
    for task, split in (("vqa", "val"), ("vqa", "test"), ("retrieval", "test")):
        path = out / f"{task}_{split}.json"
        evaluate_main(["--checkpoint", str(checkpoint), "--task", task, "--split", split, "--data", str(data_root),
                       "--rerank-k", str(rerank_k), "--out", str(path)])
        results[f"{task}_{split}"] = json.loads(path.read_text())
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (``python -m training.build_served``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", "-c", default="served", help="YAML file or a name in training/configs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seed", type=int, help="override the config's seed")
    args = parser.parse_args(argv)
    config = apply_overrides(load_yaml(args.config), args.overrides)
    if args.seed is not None:
        config["seed"] = args.seed
    command = "python -m training.build_served " + " ".join(argv if argv is not None else sys.argv[1:])
    timer = StageTimer()
    started = time.perf_counter()
    built = run_stages(config, timer, command)
    with timer.stage("package"):
        from training.served_package import package

        dest = package(config, built, timer, command)
    print("\nWhere the time went:\n" + timer.table())
    print(f"\nserved checkpoint: {dest} ({(time.perf_counter() - started) / 60:.1f} min)")
    Path(config["work"]).mkdir(parents=True, exist_ok=True)
    (Path(config["work"]) / "build_served.resolved.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
