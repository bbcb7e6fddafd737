"""A built dataset of (multi-view study, report) rows, loaded whole into memory for fast CPU training.

Layout written by ``training/build_data.py`` (never committed; rebuilt by one command)::

    DATA/data_card.json      sources, seeds, counts, attribution, the command that built it
    DATA/images_<S>.npy      uint8 [N, V, S, S] model inputs (slot 0 frontal, slot 1 lateral),
                             made by :func:`mvcm_core.data.transforms.view_to_input`
    DATA/studies.jsonl       one row per study: study_id, report_uid, split, views, text, findings,
                             labels (multi-hot over CANONICAL_TERMS), group_id (duplicate texts)
    DATA/qa.json             SLAKE-style questions (img_name = study_id)
    DATA/studies/<id>/       DICOM + PNG of a subset, for inspection and the app's examples
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass
class StudyStore:
    """Images and metadata of a built dataset (see the module docstring)."""

    root: Path
    images: np.ndarray  # uint8 [N, V, S, S]
    rows: list[dict[str, Any]]
    card: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, root: str | Path, size: int, *, mmap: bool = False) -> StudyStore:
        """Load ``images_<size>.npy`` and ``studies.jsonl`` from a dataset folder."""
        root = Path(root)
        image_path = root / f"images_{size}.npy"
        rows_path = root / "studies.jsonl"
        for path in (image_path, rows_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found; build the dataset with `python -m training.build_data`")
        images = np.load(image_path, mmap_mode="r" if mmap else None)
        rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
        if len(rows) != images.shape[0]:
            raise ValueError(f"{root}: {len(rows)} rows but {images.shape[0]} images")
        card_path = root / "data_card.json"
        card = json.loads(card_path.read_text()) if card_path.is_file() else {}
        return cls(root, images, rows, card)

    def indices(self, split: str | None = None) -> list[int]:
        """Row indices of one split (all rows if None)."""
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return [i for i, row in enumerate(self.rows) if split is None or row["split"] == split]

    def views(self, index: int) -> tuple[list[np.ndarray], list[str]]:
        """The uint8 views of a row and their labels (absent views are skipped)."""
        row = self.rows[index]
        labels = row["views"]
        return [np.asarray(self.images[index, slot]) for slot in range(len(labels))], list(labels)

    def label_matrix(self, indices: list[int] | None = None) -> np.ndarray:
        """Multi-hot findings ``[n, L]`` of the given rows."""
        chosen = self.indices() if indices is None else indices
        return np.asarray([self.rows[i]["labels"] for i in chosen], dtype=np.float32)


def write_rows(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write ``studies.jsonl``."""
    with open(path, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
