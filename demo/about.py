"""About tab: the checkpoint's model card, headline metrics and evaluation plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

METRIC_COLUMNS = ["metric", "value"]
MAX_PLOTS = 12
NO_MODEL = (
    "No checkpoint is loaded, so the app runs as a **viewer only** (upload, windowing, "
    "metadata). Set `MVCM_CHECKPOINT` to a checkpoint folder or Hub id to enable questions "
    "and retrieval."
)


def model_card(predictor: Any | None) -> str:
    """``<checkpoint>/MODEL_CARD.md``, else a short description of the checkpoint."""
    if predictor is None:
        return NO_MODEL
    folder = Path(predictor.folder) if getattr(predictor, "folder", None) else None
    if folder is not None and (folder / "MODEL_CARD.md").is_file():
        return (folder / "MODEL_CARD.md").read_text()
    name = getattr(getattr(predictor, "cfg", None), "name", "unknown")
    answers = len(getattr(predictor, "answers", []) or [])
    return (
        f"### Model `{name}`\n\nNo model card ships with this checkpoint. It answers with one of "
        f"{answers} answers and {'has' if getattr(predictor, 'index', None) is not None else 'has no'} "
        "report index."
    )


def _flatten(prefix: str, value: Any, out: list[list[Any]]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, (int, float)):
        out.append([prefix, round(float(value), 4)])
    elif isinstance(value, str) and len(value) <= 80:
        out.append([prefix, value])


def metric_rows(manifest: dict[str, Any] | None, limit: int = 40) -> list[list[Any]]:
    """Headline metrics: ``manifest["metrics"]`` flattened to ``[name, value]`` rows (numbers, short text)."""
    rows: list[list[Any]] = []
    _flatten("", (manifest or {}).get("metrics", {}) or {}, rows)
    return rows[:limit]


def eval_plots(predictor: Any | None) -> list[tuple[np.ndarray, str]]:
    """``<checkpoint>/eval/*.png`` as (image, caption), loaded into memory (no file paths served)."""
    folder = getattr(predictor, "folder", None) if predictor is not None else None
    if not folder or not (Path(folder) / "eval").is_dir():
        return []
    plots = []
    for path in sorted((Path(folder) / "eval").glob("*.png"))[:MAX_PLOTS]:
        with Image.open(path) as image:
            plots.append((np.asarray(image.convert("RGB")), path.stem.replace("_", " ")))
    return plots
