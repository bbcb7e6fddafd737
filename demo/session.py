"""Per-session state of the app: the loaded study, corrected labels, results, and a private temp dir.

A :class:`Session` lives in a ``gr.State`` (deep-copyable, no open handles). Everything the session
writes (overlay PNGs, the results zip) goes under :func:`session_dir`, a 0700 directory below
``<system temp>/mvcm-demo/`` whose name is a keyed hash of Gradio's session hash. It is deleted by
the "clear session" button, by ``demo.unload`` when the tab closes, and by the State's
``delete_callback`` when Gradio expires the state.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mvcm_core.data.study import FileRecord, Study

SESSION_ROOT = Path(tempfile.gettempdir()) / "mvcm-demo"
_SALT = secrets.token_bytes(16)


@dataclass
class Session:
    """What one browser session has loaded and produced.

    Attributes:
        workdir: the session's private temp dir ("" until something is written).
        studies: the studies found in the last upload.
        records: every uploaded file's record (accepted or rejected).
        aliases: upload path → "file N" (API outputs never carry the uploaded file names).
        selected: index of the study shown and sent to the model.
        labels: the (user-corrected) view labels of the selected study, one per view.
        preset: display window preset (display only: the model always gets the file's own window).
        invert: display inversion (display only).
        example: the shipped example study the upload matches, if any.
        answers: every answer of the session (``Answer.to_dict()``), oldest first.
        retrievals: every retrieval of the session (JSON-ready), oldest first.
        overlay_files: PNG overlays written for the answers, in the session dir.
    """

    workdir: str = ""
    studies: list[Study] = field(default_factory=list)
    records: list[FileRecord] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    selected: int = 0
    labels: list[str] = field(default_factory=list)
    preset: str = "file"
    invert: bool = False
    example: str | None = None
    answers: list[dict[str, Any]] = field(default_factory=list)
    retrievals: list[dict[str, Any]] = field(default_factory=list)
    overlay_files: list[str] = field(default_factory=list)

    @property
    def study(self) -> Study | None:
        """The selected study, if any."""
        return self.studies[self.selected] if 0 <= self.selected < len(self.studies) else None

    def model_views(self) -> list[tuple[np.ndarray, str]]:
        """(display image in the file's own window, corrected label) per view, for the Predictor.

        Raises:
            ValueError: no study is loaded.
        """
        study = self.study
        if study is None:
            raise ValueError("Load a study first (upload its files or pick an example).")
        labels = self.labels if len(self.labels) == len(study.views) else [v.label for v in study.views]
        return [(view.pixels, label) for view, label in zip(study.views, labels)]

    def reset_results(self) -> None:
        """Forget answers, retrievals and overlays (their files are deleted)."""
        for name in self.overlay_files:
            Path(name).unlink(missing_ok=True)
        self.answers, self.retrievals, self.overlay_files = [], [], []


def session_dir(session_hash: str) -> Path:
    """The temp dir of a Gradio session (not created here)."""
    digest = hashlib.blake2b(session_hash.encode(), key=_SALT, digest_size=8).hexdigest()
    return SESSION_ROOT / f"s-{digest}"


def ensure_workdir(session: Session, session_hash: str | None = None) -> Path:
    """Create (once) and return the session's private temp dir."""
    if session.workdir and Path(session.workdir).is_dir():
        return Path(session.workdir)
    SESSION_ROOT.mkdir(mode=0o700, parents=True, exist_ok=True)
    if session_hash:
        path = session_dir(session_hash)
        path.mkdir(mode=0o700, exist_ok=True)
    else:
        path = Path(tempfile.mkdtemp(prefix="s-", dir=SESSION_ROOT))
    session.workdir = str(path)
    return path


def delete_session_files(session: Session | None) -> None:
    """Delete a session's temp dir (``gr.State`` delete_callback; safe to call twice)."""
    if session is not None and session.workdir:
        _remove_below_root(Path(session.workdir))
        session.workdir = ""


def drop_session_dir(session_hash: str | None) -> None:
    """Delete the temp dir of a Gradio session by its hash (``demo.unload``)."""
    if session_hash:
        _remove_below_root(session_dir(session_hash))


def clear_session(session: Session | None) -> Session:
    """Delete everything the session holds and return a fresh one."""
    delete_session_files(session)
    return Session()


def _remove_below_root(path: Path) -> None:
    """rmtree, but only for directories inside :data:`SESSION_ROOT` (never anything else)."""
    resolved = path.resolve()
    if resolved.parent == SESSION_ROOT.resolve() and resolved.is_dir():
        shutil.rmtree(resolved, ignore_errors=True)
