"""Files and folders in, multi-view studies out (pydicom + numpy + Pillow, no torch).

:func:`scan_paths` walks files and folders (recursively, DICOMDIR-aware), reads every file with
:func:`mvcm_core.data.dicom.read_dicom` or as a PNG / JPEG, and returns one :class:`FileRecord` per
file: ``ok`` or ``rejected`` with a one-line reason. :func:`group_studies` groups the usable files by
study (StudyInstanceUID → series → instance number); two studies in one folder stay two studies.
PNG / JPEG uploads carry no study identity: together they form one study with ``unknown`` views.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from mvcm_core.data.dicom import DicomImage, DicomRejected, Limits, describe_non_dicom, read_dicom, sniff_kind
from mvcm_core.data.dicom_meta import DicomMeta, opaque_key
from mvcm_core.data.windowing import WindowPreset, generic_presets, to_display

RASTER_STUDY_KEY = "study-uploaded-images"
PREVIEW_REASON = "preview image beside DICOM files in the same folder (the DICOMs are the views)"
FRONTAL = ("PA", "AP")


@dataclass
class FileRecord:
    """What became of one input file.

    Attributes:
        path: the file as found.
        kind: ``dicom``, ``png``, ``jpeg`` or ``unknown`` (sniffed from content).
        reason: empty when usable, else the one-line rejection reason.
        image: the decoded image when usable.
    """

    path: Path
    kind: str
    reason: str = ""
    image: DicomImage | None = None

    @property
    def ok(self) -> bool:
        """True when the file is usable as a view."""
        return not self.reason and self.image is not None

    @property
    def status(self) -> str:
        """``ok`` or ``rejected: <reason>``."""
        return "ok" if self.ok else f"rejected: {self.reason}"

    @property
    def meta(self) -> DicomMeta | None:
        """PHI-free metadata of a usable file."""
        return self.image.meta if self.image is not None else None


@dataclass
class View:
    """One view of a study: a windowed image and its (user-correctable) label."""

    label: str
    image: DicomImage
    record: FileRecord

    @property
    def pixels(self) -> np.ndarray:
        """``[rows, cols]`` float32 display image in [0, 1] (1 = white)."""
        return self.image.display


@dataclass
class Study:
    """The usable views of one study, ordered by series number then instance number."""

    key: str
    views: list[View] = field(default_factory=list)

    def views_labelled(self, *labels: str) -> list[View]:
        """Views whose label is one of ``labels``."""
        return [v for v in self.views if v.label in labels]

    @property
    def frontal(self) -> View | None:
        """The first PA / AP view, if any."""
        return next(iter(self.views_labelled(*FRONTAL)), None)

    @property
    def lateral(self) -> View | None:
        """The first lateral view, if any."""
        return next(iter(self.views_labelled("LATERAL")), None)


def read_raster(path: str | Path, limits: Limits | None = None) -> DicomImage:
    """Read a PNG / JPEG upload as a grayscale view with an ``unknown`` label.

    Raises:
        DicomRejected: unreadable or too large (one line).
    """
    limits = limits or Limits()
    path = Path(path)
    if path.stat().st_size > limits.max_file_bytes:
        raise DicomRejected(f"file is {path.stat().st_size:,} bytes, above the {limits.max_file_bytes:,}-byte limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > limits.max_pixels:
                    raise DicomRejected(f"image of {img.height}×{img.width} pixels exceeds the pixel limit")
                mode = img.mode
                img = img.convert("I;16" if mode in ("I;16", "I;16B", "I") else "L")
                values = np.asarray(img, dtype=np.float32)
    except DicomRejected:
        raise
    except (OSError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DicomRejected(f"unreadable image ({type(exc).__name__})") from None
    high = 65535.0 if values.max(initial=0) > 255 else 255.0
    preset = WindowPreset("file: as stored", "full")
    display = to_display(values, preset, inverted=False, stored_range=(0.0, high))
    bits = 16 if high > 255 else 8
    meta = DicomMeta(
        file_name=path.name, study_key=RASTER_STUDY_KEY, series_key="series-none", instance_key="instance-none",
        series_number=None, instance_number=None, sop_class=f"{sniff_kind(path).upper()} image", modality="",
        view="unknown", view_source="none", rows=values.shape[0], columns=values.shape[1], frames=1,
        samples_per_pixel=1, bits_allocated=bits, bits_stored=bits, pixel_representation=0,
        photometric="MONOCHROME2", transfer_syntax="", window_presets=("file: as stored", *[
            p.name for p in generic_presets()]),
        warnings=("no DICOM metadata: view label unknown",),
    )
    return DicomImage(values, display, meta, [preset, *generic_presets()], preset, False, (0.0, high))


def _dicomdir_references(dicomdir: Path) -> list[Path]:
    """Files a DICOMDIR references (resolved next to it; missing ones included, to be reported)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(dicomdir, defer_size="1 MB")
    except Exception:  # noqa: BLE001 - a broken DICOMDIR is reported by the reader itself
        return []
    found = []
    for record in ds.get("DirectoryRecordSequence", None) or []:
        file_id = record.get("ReferencedFileID", None)
        if not file_id:
            continue
        parts = [file_id] if isinstance(file_id, str) else list(file_id)
        found.append(dicomdir.parent.joinpath(*[str(p) for p in parts]))
    return found


def collect_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (recursively) into a sorted, de-duplicated file list.

    A DICOMDIR contributes the files it references (those that are missing are kept, so that they
    are reported as missing).
    """
    ordered: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw)
        candidates = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for candidate in candidates:
            ordered.setdefault(candidate, None)
            if candidate.name.upper() == "DICOMDIR":
                for referenced in _dicomdir_references(candidate):
                    ordered.setdefault(referenced, None)
    return list(ordered)


def read_file(path: Path, limits: Limits | None = None, kind: str | None = None,
              max_side: int | None = None) -> FileRecord:
    """Read one file into a :class:`FileRecord` (never raises for bad input); ``kind`` if already sniffed.

    ``max_side`` lets a DICOM be resized before windowing (:func:`~mvcm_core.data.dicom.read_dicom`).
    """
    if not path.exists():
        return FileRecord(path, "unknown", "file not found")
    kind = kind or sniff_kind(path)
    try:
        if kind == "dicom":
            return FileRecord(path, kind, image=read_dicom(path, limits=limits, max_side=max_side))
        if kind in ("png", "jpeg"):
            return FileRecord(path, kind, image=read_raster(path, limits))
        return FileRecord(path, kind, describe_non_dicom(path, kind))
    except DicomRejected as exc:
        return FileRecord(path, kind, str(exc))
    except MemoryError:
        return FileRecord(path, kind, "not enough memory to decode this image")
    except BaseException as exc:  # noqa: BLE001 - last line of defence: one line, never a traceback
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        return FileRecord(path, kind, f"unexpected error while reading ({type(exc).__name__})")


def scan_paths(paths: Sequence[str | Path], limits: Limits | None = None, max_side: int | None = None
               ) -> list[FileRecord]:
    """Read every file under ``paths``; duplicates of an instance already read are rejected.

    A PNG / JPEG in a folder that also holds DICOM files is a preview of them, not another view.
    """
    records: list[FileRecord] = []
    seen: dict[str, Path] = {}
    files = collect_files(paths)
    kinds = {p: sniff_kind(p) for p in files if p.is_file()}  # one header read per file
    dicom_folders = {p.parent for p, kind in kinds.items() if kind == "dicom"}
    for path in files:
        kind = kinds.get(path)
        if path.parent in dicom_folders and kind in ("png", "jpeg"):
            records.append(FileRecord(path, kind, PREVIEW_REASON))
            continue
        record = read_file(path, limits, kind, max_side)
        meta = record.meta
        if meta is not None and meta.instance_key != "instance-none":
            if meta.instance_key in seen:
                record = FileRecord(path, record.kind, f"duplicate of {seen[meta.instance_key].name} (same instance)")
            else:
                seen[meta.instance_key] = path
        records.append(record)
    return records


def study_key_of(record: FileRecord) -> str:
    """The study a usable file belongs to; a file without StudyInstanceUID is a study of its own."""
    key = record.meta.study_key if record.meta is not None else "study-none"
    return opaque_key("study", f"single-file:{record.path}") if key == "study-none" else key


def group_studies(records: Sequence[FileRecord]) -> list[Study]:
    """Group usable files into studies, views ordered by (series number, instance number, name)."""
    studies: dict[str, Study] = {}
    for record in records:
        if not record.ok:
            continue
        meta = record.meta
        key = study_key_of(record)
        studies.setdefault(key, Study(key)).views.append(View(meta.view, record.image, record))
    for study in studies.values():
        study.views.sort(key=lambda v: (v.image.meta.series_number or 0, v.image.meta.instance_number or 0,
                                        v.record.path.name))
    return list(studies.values())


def load_studies(paths: Sequence[str | Path], limits: Limits | None = None, max_side: int | None = None
                 ) -> tuple[list[Study], list[FileRecord]]:
    """Scan ``paths`` and group them; returns (studies, every file's record); ``max_side``: see :func:`read_file`."""
    records = scan_paths(paths, limits, max_side)
    return group_studies(records), records
