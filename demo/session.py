"""Per-session state of the app: the loaded study, corrected labels, results, a private temp dir, limits.

A :class:`Session` lives in a ``gr.State`` (deep-copyable, no open handles). Everything the session
writes (overlay PNGs, the results zip) goes under :func:`session_dir`, a 0700 directory below
``<system temp>/mvcm-demo/`` whose name is a keyed hash of Gradio's session hash. It is deleted by
the "clear session" button, by ``demo.unload`` when the tab closes, and by the State's
``delete_callback`` when Gradio expires the state.

:class:`AppLimits` (read once at app start from ``MVCM_*`` environment variables) bounds uploads,
questions and the request rate; :class:`RateLimiter` is a token bucket per client session;
:class:`UploadTracker` deletes uploaded files from Gradio's cache as soon as no request needs them.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from mvcm_core.data.dicom import Limits
from mvcm_core.data.study import FileRecord, Study
from mvcm_core.folders import sha256_file

SESSION_ROOT = Path(tempfile.gettempdir()) / "mvcm-demo"
STRAY_SECONDS = 10.0  # Gradio leaves its multipart temp files (empty, or a refused upload's part) behind
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


@dataclass(frozen=True)
class AppLimits:
    """Bounds on what one request may ask of the app (environment variable in brackets).

    Attributes:
        max_files: files per upload (``MVCM_MAX_FILES``); the rest are rejected with a reason.
        max_file_mb: size of one uploaded file in MB (``MVCM_MAX_FILE_MB``); Gradio refuses larger uploads.
        max_pixels: Rows × Columns of one image (``MVCM_MAX_PIXELS``), checked before decoding.
        max_total_pixels: pixels of all images of one upload (``MVCM_MAX_TOTAL_PIXELS``).
        max_question_chars: characters of one question (``MVCM_MAX_QUESTION_CHARS``).
        rate_per_minute: sustained requests per client session (``MVCM_RATE_PER_MINUTE``).
        rate_burst: requests a client session may make at once (``MVCM_RATE_BURST``).
        upload_ttl_s: an upload no request claimed is deleted after this (``MVCM_UPLOAD_TTL_S``).
        queue_size: requests waiting in Gradio's queue; more are told to retry (``MVCM_QUEUE_SIZE``).
    """

    max_files: int = 6
    max_file_mb: float = 50.0
    max_pixels: int = 40_000_000
    max_total_pixels: int = 80_000_000
    max_question_chars: int = 300
    rate_per_minute: float = 120.0
    rate_burst: int = 30
    upload_ttl_s: float = 300.0
    queue_size: int = 16

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> AppLimits:
        """Defaults overridden by ``MVCM_<FIELD>`` variables (e.g. ``MVCM_MAX_FILES=4``).

        Raises:
            ValueError: a variable that is not a positive number.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for item in fields(cls):
            raw = environ.get(f"MVCM_{item.name.upper()}")
            if raw is None:
                continue
            try:
                value = int(raw) if item.type == "int" else float(raw)
            except ValueError:
                raise ValueError(f"MVCM_{item.name.upper()}={raw!r} is not a number") from None
            if value <= 0:
                raise ValueError(f"MVCM_{item.name.upper()} must be positive, got {raw}")
            values[item.name] = value
        return cls(**values)

    @property
    def max_file_bytes(self) -> int:
        """:attr:`max_file_mb` in bytes."""
        return int(self.max_file_mb * 1024**2)

    @property
    def reader(self) -> Limits:
        """The DICOM reader's limits for one file."""
        frame_bytes = max(Limits().max_frame_bytes, self.max_pixels * 8)
        return Limits(max_file_bytes=self.max_file_bytes, max_pixels=self.max_pixels, max_frame_bytes=frame_bytes)

    @property
    def gradio_max_file_size(self) -> int:
        """``launch(max_file_size=...)`` in bytes."""
        return self.max_file_bytes


class RateLimiter:
    """A token bucket per key (a client session): ``burst`` at once, ``per_minute`` sustained."""

    def __init__(self, per_minute: float, burst: int, clock: Any = time.monotonic, max_keys: int = 10_000):
        self.rate, self.burst, self.clock, self.max_keys = per_minute / 60.0, float(burst), clock, max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str | None) -> None:
        """Take one token for ``key``.

        Raises:
            ValueError: no token left; the message says how long to wait.
        """
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key or "", (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key or ""] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
                raise ValueError(f"Too many requests: wait {wait:.1f} s and try again.")
            if len(self._buckets) >= self.max_keys and (key or "") not in self._buckets:
                self._buckets.pop(next(iter(self._buckets)))  # forget the oldest client
            self._buckets[key or ""] = (tokens - 1.0, now)


class UploadTracker:
    """Deletes uploads from Gradio's cache once the requests that uploaded them have read them.

    Gradio stores an upload at ``<cache>/<sha of content>/<name>``, so thirty students uploading the
    same study share one path. :meth:`install` makes the Blocks count uploads per path; each request
    that reads a path :meth:`release`-s one count, and at zero the file is deleted. Files nobody
    claims (an upload whose request was refused) are deleted by :meth:`sweep` after ``ttl_s``.
    """

    def __init__(self, ttl_s: float = 300.0) -> None:
        self.ttl_s = ttl_s
        self._counts: Counter[str] = Counter()
        self._owners: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._kept: dict[int, frozenset[str]] = {}  # size -> sha256s of files never to delete

    def protect(self, paths: Iterable[str | Path]) -> None:
        """Never delete files with these files' bytes: Gradio caches an example at the same
        ``<cache>/<hash>/<name>`` path as an identical upload, so deleting the upload would break it."""
        for path in paths:
            size = Path(path).stat().st_size
            self._kept[size] = self._kept.get(size, frozenset()) | {sha256_file(Path(path))}

    def _delete(self, path: Path) -> None:
        """Delete an upload unless it is a protected file (size checked first, hash only on a match)."""
        try:
            kept = self._kept.get(path.stat().st_size)
        except OSError:
            return
        if kept and sha256_file(path) in kept:
            return
        _delete_upload(path)

    def install(self, blocks: Any) -> None:
        """Count every upload Gradio records in ``blocks.upload_file_set``."""
        tracker = self

        class CountingSet(set):
            def update(self, *others: Iterable[str]) -> None:  # type: ignore[override]
                for other in others:
                    other = list(other)
                    tracker._add(other)
                    super().update(other)

        counting = CountingSet(blocks.upload_file_set)
        blocks.temp_file_sets = [counting if s is blocks.upload_file_set else s for s in blocks.temp_file_sets]
        blocks.upload_file_set = counting
        threading.Thread(target=self._sweep_forever, daemon=True, name="mvcm-upload-sweeper").start()

    def _sweep_forever(self, interval: float = 5.0) -> None:
        while True:
            time.sleep(interval)
            self.sweep()

    def _add(self, paths: Iterable[str]) -> None:
        with self._lock:
            self._counts.update(str(Path(p)) for p in paths)

    def held(self) -> int:
        """Uploads still counted (waiting for a request)."""
        with self._lock:
            return sum(self._counts.values())

    def release(self, paths: Sequence[str | Path] | None) -> None:
        """One request has read ``paths``: delete each whose last count this was (unknown paths are kept)."""
        for raw in paths or []:
            key = str(Path(raw))
            with self._lock:
                if self._counts[key] <= 0:
                    self._counts.pop(key, None)
                    continue
                self._counts[key] -= 1
                last = self._counts[key] == 0
                if last:
                    del self._counts[key]
            if last:
                self._delete(Path(key))

    def hold(self, owner: str | None, paths: Sequence[str | Path] | None) -> None:
        """A UI session keeps its uploads (the file list may be sent again) until :meth:`drop`."""
        if owner:
            with self._lock:
                self._owners.setdefault(owner, set()).update(str(Path(p)) for p in paths or [])

    def drop(self, owner: str | None) -> None:
        """The UI session ended or was cleared: release each upload it held once."""
        with self._lock:
            held = self._owners.pop(owner or "", set())
        self.release(sorted(held))

    def sweep(self, now: float | None = None) -> int:
        """Delete counted uploads older than ``ttl_s`` (claimed by no request); returns how many."""
        now = time.time() if now is None else now
        with self._lock:
            stale = [k for k in self._counts if not Path(k).exists() or now - Path(k).stat().st_mtime > self.ttl_s]
            for key in stale:
                del self._counts[key]
        for key in stale:
            self._delete(Path(key))
        return len(stale) + _sweep_strays(now)


def _sweep_strays(now: float) -> int:
    """Delete Gradio's leftover ``tmp*`` multipart files in the upload dir root after :data:`STRAY_SECONDS`."""
    from gradio.utils import get_upload_folder

    removed = 0
    for path in Path(get_upload_folder()).glob("tmp*"):
        try:
            if path.is_file() and now - path.stat().st_mtime > STRAY_SECONDS:
                path.unlink()
                removed += 1
        except OSError:
            continue
    return removed


def _delete_upload(path: Path) -> None:
    """Delete an uploaded file and its per-upload folder when that is empty."""
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:
        pass
