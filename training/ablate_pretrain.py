"""Ablation matrix of a pretraining config: all losses on, then each loss switched off alone.

``python -m training.ablate_pretrain --config smoke [--steps 20] [--out runs/ablation]`` trains every
variant on the same data and prints (and writes ``ablation.md``) one Markdown table: for each variant,
whether every remaining term is finite and falling, and each term's start → end (means of the first
and last quarter of the steps).
"""

from __future__ import annotations

import argparse
import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.engine import JsonlLog
from training.params import apply_overrides, load_yaml
from training.pretrain import train


def term_trends(records: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """``term -> (mean of the first quarter, mean of the last quarter)`` of each logged loss term."""
    quarter = max(1, len(records) // 4)
    keys = sorted({k for r in records for k in r if k.endswith("_loss") or k == "loss"})
    trends = {}
    for key in keys:
        values = [r[key] for r in records if key in r]
        trends[key] = (sum(values[:quarter]) / quarter, sum(values[-quarter:]) / quarter)
    return trends


def variants(config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``("all losses", config)`` then ``("no <loss>", config without it)`` for every enabled loss."""
    enabled = [name for name, params in config["losses"].items() if float((params or {}).get("weight", 0)) > 0]
    out = [("all losses", config)]
    for name in enabled:
        variant = copy.deepcopy(config)
        variant["losses"][name]["weight"] = 0.0
        out.append((f"no {name}", variant))
    return out


def trains(trends: dict[str, tuple[float, float]]) -> bool:
    """A variant trains when its weighted total falls and every term stays finite."""
    total = trends.get("loss")
    finite = all(math.isfinite(v) for pair in trends.values() for v in pair)
    return bool(finite and total is not None and total[1] < total[0])


def markdown_table(results: list[tuple[str, dict[str, tuple[float, float]]]], names: list[str]) -> str:
    """One row per variant: trains? terms falling, then start → end of every term (↑ = rose)."""
    header = "| variant | trains | terms falling | " + " | ".join(names) + " |"
    lines = [header, "|" + " --- |" * (len(names) + 3)]
    for variant, trends in results:
        terms = {k: v for k, v in trends.items() if k != "loss"}
        falling = sum(end < start for start, end in terms.values())
        cells = [f"{trends[n][0]:.3f} → {trends[n][1]:.3f}{'' if trends[n][1] < trends[n][0] else ' ↑'}"
                 if n in trends else "off" for n in names]
        lines.append(f"| {variant} | {'yes' if trains(trends) else 'NO'} | {falling}/{len(terms)} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Train every variant and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", "-c", default="smoke")
    parser.add_argument("--steps", type=int, help="optimiser steps per variant (default: the config's)")
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    config = apply_overrides(load_yaml(args.config), args.overrides)
    root = Path(args.out)
    config["data"].setdefault("root", str(root / "data"))  # every variant trains on the same data
    if args.steps:
        config["train"]["steps"] = args.steps
    config["train"]["checkpoint_every"] = 0
    results = []
    for name, variant in variants(config):
        variant["out"] = str(root / name.replace(" ", "_"))
        run = train(variant)
        results.append((name, term_trends(JsonlLog(run / "log.jsonl").records())))
    names = ["loss"] + sorted({k for _, trends in results for k in trends if k != "loss"})
    table = markdown_table(results, names)
    (root / "ablation.md").write_text(f"# Pretraining ablation ({args.config}, {config['train']['steps']} steps)\n\n"
                                      f"{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
