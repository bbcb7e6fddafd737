"""Model registry and factory: a model is a name → a JSON config → one :func:`create_model` call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mvcm_core.config import ModelCfg, merge_overrides

CONFIG_DIR = Path(__file__).parent / "model_configs"


def list_models() -> list[str]:
    """Names of the built-in model configs."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def get_model_config(name: str, overrides: dict[str, Any] | None = None) -> ModelCfg:
    """Config of a named model, a JSON file, or a checkpoint folder (its ``config.json``).

    Args:
        name: ``mvcm-tiny``, a path to a ``.json`` file, or a checkpoint folder.
        overrides: nested dict merged on top (e.g. ``{"vision": {"image_size": 96}}``).
    """
    path = Path(name)
    if (CONFIG_DIR / f"{name}.json").is_file():
        path = CONFIG_DIR / f"{name}.json"
    elif path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ValueError(f"unknown model {name!r}; built-in models: {', '.join(list_models())}")
    data = json.loads(path.read_text())
    data = data.get("model", data)  # checkpoint configs nest the model config
    return ModelCfg.from_dict(merge_overrides(data, overrides or {}))


def create_model(name_or_cfg: str | ModelCfg, overrides: dict[str, Any] | None = None):  # noqa: ANN201
    """Build an (untrained) :class:`~mvcm_core.models.mvcm.MVCM` from a name or a config."""
    from mvcm_core.models.mvcm import MVCM

    if isinstance(name_or_cfg, ModelCfg):
        cfg = name_or_cfg if not overrides else ModelCfg.from_dict(merge_overrides(name_or_cfg.to_dict(), overrides))
    else:
        cfg = get_model_config(name_or_cfg, overrides)
    return MVCM(cfg)
