"""Run configuration: a YAML file, then ``--set key.sub=value`` overrides; the resolved config is saved.

Only plain data: no code is executed from configs (values are parsed with ``yaml.safe_load``).
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).parent / "configs"


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config; a bare name resolves to ``training/configs/<name>.yaml``."""
    path = Path(path)
    if not path.is_file() and (CONFIG_DIR / f"{path.name}.yaml").is_file():
        path = CONFIG_DIR / f"{path.name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"config not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    base = data.pop("base", None)
    if base:  # single inheritance: ``base: pretrain_tiny`` then override
        data = deep_merge(load_yaml(base if Path(base).is_file() else CONFIG_DIR / f"{base}.yaml"), data)
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base``."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def apply_overrides(config: dict[str, Any], assignments: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (values parsed as YAML scalars / lists / dicts)."""
    config = copy.deepcopy(config)
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key:
            raise ValueError(f"override must look like key.sub=value, got {assignment!r}")
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"cannot set {key}: {part} is not a section")
        node[leaf] = yaml.safe_load(raw)
    return config


def common_parser(description: str) -> argparse.ArgumentParser:
    """Flags shared by the training entry points."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", "-c", required=True, help="YAML file or a name in training/configs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.steps=20 (repeatable)")
    parser.add_argument("--out", help="run folder (default: the config's `out`)")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    return parser


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """Config file + overrides + ``--out``."""
    config = apply_overrides(load_yaml(args.config), args.overrides)
    if args.out:
        config["out"] = args.out
    if not config.get("out"):
        raise ValueError("no run folder: give --out or set `out` in the config")
    return config


def save_resolved(config: dict[str, Any], folder: Path) -> Path:
    """Write ``config.resolved.yaml`` beside the run."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.resolved.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
