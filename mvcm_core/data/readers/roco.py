"""ROCO (Radiology Objects in COntext) in the layout of its repository after ``scripts/fetch.py``.

Layout (``root`` is the repository's ``data/`` folder, or the repository itself)::

    root/{train,validation,test}/radiology/captions.txt   ROCO_00020<TAB> caption text
    root/{train,validation,test}/radiology/dlinks.txt
        ROCO_00020<TAB>wget -r ftp://.../PMC3498864.tar.gz -P /path/to/Dir<TAB>jovr-04-256f2.jpg
    root/{train,validation,test}/radiology/images/PMC3498864_jovr-04-256f2.jpg

``fetch.py`` names each image ``<PMC id>_<file name in the archive>``, both taken from
``dlinks.txt``; repacks that rename images to ``ROCO_00020.jpg`` are accepted as a fallback.
Each caption becomes a single-image :class:`StudyRecord` (``report`` = caption) for retrieval
and pretraining. Splits: train / validation -> val / test. The 2,000-pair retrieval test subset
is chosen by the evaluation code, not here.
"""

from __future__ import annotations

from pathlib import Path

from ._common import (
    MALFORMED,
    MISSING_IMAGE,
    ReaderError,
    ReadStats,
    check_malformed_fraction,
    image_present,
    require_file,
    resolve_split,
)
from .records import StudyRecord

NAME = "roco"
SPLIT_FOLDERS = {"train": "train", "val": "validation", "test": "test"}
SUBSETS = ("radiology", "non-radiology")


def data_root(root: Path) -> Path:
    """Accept either the repository's ``data/`` folder or the repository root."""
    if (root / "train").is_dir() or (root / "test").is_dir() or (root / "validation").is_dir():
        return root
    if (root / "data").is_dir():
        return root / "data"
    raise ReaderError(f"missing ROCO split folders (train/, validation/, test/) under {root}")


def read_dlinks(folder: Path) -> dict[str, str]:
    """ROCO id -> fetched image file name (``<PMC id>_<name>``); empty if there is no dlinks file."""
    candidates = [folder / "dlinks.txt", *sorted(folder.glob("dlinks*.txt"))]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        return {}
    names: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        url = next((tok for tok in parts[1].split() if "://" in tok), "") if len(parts) >= 3 else ""
        if url:
            pmc_id = url.rsplit("/", 1)[-1].removesuffix(".tar.gz")
            names[parts[0].strip()] = f"{pmc_id}_{parts[-1].strip()}"
    return names


def _image_path(image_dir: Path, roco_id: str, fetched_names: dict[str, str]) -> Path:
    fetched = image_dir / fetched_names[roco_id] if roco_id in fetched_names else None
    renamed = image_dir / f"{roco_id}.jpg"
    if fetched is not None and (fetched.exists() or not renamed.exists()):
        return fetched
    return renamed


def read_roco(
    root: str | Path,
    split: str | None = None,
    *,
    subset: str = "radiology",
    check_images: bool = True,
    stats: ReadStats | None = None,
) -> list[StudyRecord]:
    """Read ROCO captions and images.

    Args:
        root: the ROCO ``data/`` folder or the repository root.
        split: ``"train"``, ``"val"``, ``"test"`` or None for all three.
        subset: ``"radiology"`` (used by the literature) or ``"non-radiology"``.
        check_images: skip (and count) captions whose image was not fetched.
        stats: filled with kept / skipped counts when given.

    Returns:
        One single-image record per caption; ``study_id`` is the ROCO id.
    """
    if subset not in SUBSETS:
        raise ReaderError(f"{NAME}: unknown subset {subset!r}; use one of {SUBSETS}")
    base = data_root(Path(root))
    stats = stats if stats is not None else ReadStats(NAME)
    records: list[StudyRecord] = []
    for our_split in resolve_split(split, NAME, list(SPLIT_FOLDERS)):
        folder = base / SPLIT_FOLDERS[our_split] / subset
        captions = require_file(folder / "captions.txt", "ROCO captions file")
        fetched_names = read_dlinks(folder)
        before, rows = stats.skipped[MALFORMED], 0
        for number, line in enumerate(captions.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            rows += 1
            roco_id, _, caption = line.partition("\t")
            roco_id, caption = roco_id.strip(), caption.strip()
            if not roco_id.startswith("ROCO_") or not caption:
                stats.skip(MALFORMED, f"{captions.name}:{number}")
                continue
            image_path = _image_path(folder / "images", roco_id, fetched_names)
            if not image_present(image_path, check_images):
                stats.skip(MISSING_IMAGE, f"{captions.name}:{number} {image_path.name}")
                continue
            records.append(
                StudyRecord(
                    dataset=NAME,
                    split=our_split,
                    study_id=roco_id,
                    image_paths=(image_path,),
                    views=("unknown",),
                    report=caption,
                    sections={"caption": caption},
                    extra={"subset": subset},
                )
            )
        check_malformed_fraction(stats, captions, before, rows)
    stats.finish(len(records))
    return records
