"""Verifiable folders without torch: sha256 of files and the atomic swap of a staged folder into place.

Shared by checkpoints (:mod:`mvcm_core.checkpoint`) and retrieval indexes (:mod:`mvcm_core.index`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

MANIFEST_NAME = "manifest.json"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def replace_folder(staging: Path, folder: Path) -> None:
    """fsync every staged file, then swap ``staging`` into the place of ``folder`` by renames."""
    for path in staging.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    retired = folder.with_name(f".{folder.name}.old")
    if folder.exists():
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(folder, retired)
    os.replace(staging, folder)
    shutil.rmtree(retired, ignore_errors=True)


def recover_folder(folder: Path) -> bool:
    """Undo a swap interrupted between its two renames: put ``.<name>.old`` back; True if it did."""
    retired = folder.with_name(f".{folder.name}.old")
    if folder.exists() or not retired.is_dir():
        return False
    os.replace(retired, folder)
    return True


@contextlib.contextmanager
def staged_folder(folder: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside ``folder``; on success it replaces ``folder`` atomically,
    on any error it is removed and ``folder`` is left as it was."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(folder)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield staging
        replace_folder(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
