"""PHI-free metadata of a DICOM image: an allow-list of technical fields, opaque keys, view labels.

Nothing here copies a patient-identifying attribute. Study / series / instance UIDs are replaced by
opaque keyed hashes (the key is random per process unless ``MVCM_KEY_SALT`` is set), so two files
of one study share a key, but the key cannot be turned back into the UID.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

VIEWS = ("PA", "AP", "LATERAL", "unknown")
_SALT = os.environ.get("MVCM_KEY_SALT", "").encode() or secrets.token_bytes(16)

# ViewPosition defined terms (PS3.3 C.8.11.5) and common vendor strings → our labels
_VIEW_POSITION = {
    "PA": "PA",
    "POSTERO-ANTERIOR": "PA",
    "AP": "AP",
    "ANTERO-POSTERIOR": "AP",
    "APS": "AP",
    "AP SUPINE": "AP",
    "LL": "LATERAL",
    "RL": "LATERAL",
    "LAT": "LATERAL",
    "LATERAL": "LATERAL",
    "LLAT": "LATERAL",
    "RLAT": "LATERAL",
}
# code meanings of CID 4010 (DX View) and similar, matched as lower-case regexes
_VIEW_CODE_PATTERNS = (
    (re.compile(r"postero-?\s?anterior"), "PA"),
    (re.compile(r"antero-?\s?posterior"), "AP"),
    (re.compile(r"\blateral\b"), "LATERAL"),
)
# free-text descriptions (series, image, protocol), matched as upper-case regexes
_DESCRIPTION_PATTERNS = (
    (re.compile(r"\bLAT(ERAL)?\b|\bLL\b|\bRL\b"), "LATERAL"),
    (re.compile(r"\bP\.?A\.?\b|POSTERO-?ANTERIOR"), "PA"),
    (re.compile(r"\bA\.?P\.?\b|ANTERO-?POSTERIOR|PORTABLE|SUPINE"), "AP"),
)


def opaque_key(kind: str, uid: str | None) -> str:
    """A short keyed hash of a UID (``kind-xxxxxxxxxxxx``); ``kind-none`` when there is no UID."""
    if not uid:
        return f"{kind}-none"
    digest = hashlib.blake2b(str(uid).encode(), key=_SALT, digest_size=6).hexdigest()
    return f"{kind}-{digest}"


def infer_view(ds: Any) -> tuple[str, str]:
    """Frontal / lateral label of an image and where it came from.

    Order: ViewPosition, then the View Code Sequence, then series / image descriptions and the
    protocol name. Returns ``(view, source)`` with view in :data:`VIEWS`.
    """
    position = str(ds.get("ViewPosition", "") or "").strip().upper()
    if position in _VIEW_POSITION:
        return _VIEW_POSITION[position], "ViewPosition"
    for item in ds.get("ViewCodeSequence", None) or []:
        meaning = str(item.get("CodeMeaning", "") or "").lower()
        for pattern, view in _VIEW_CODE_PATTERNS:
            if pattern.search(meaning):
                return view, "ViewCodeSequence"
    for keyword in ("SeriesDescription", "ImageComments", "ProtocolName", "StudyDescription"):
        text = str(ds.get(keyword, "") or "").upper()
        for pattern, view in _DESCRIPTION_PATTERNS:
            if text and pattern.search(text):
                return view, keyword
    return "unknown", "none"


@dataclass(frozen=True)
class DicomMeta:
    """Technical, PHI-free description of one DICOM image file (safe to show, log and return)."""

    file_name: str
    study_key: str
    series_key: str
    instance_key: str
    series_number: int | None
    instance_number: int | None
    sop_class: str
    modality: str
    view: str
    view_source: str
    rows: int
    columns: int
    frames: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str
    transfer_syntax: str
    body_part: str = ""
    image_laterality: str = ""
    presentation_intent: str = ""
    pixel_spacing_mm: tuple[float, float] | None = None
    window_presets: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        data = asdict(self)
        data["pixel_spacing_mm"] = list(self.pixel_spacing_mm) if self.pixel_spacing_mm else None
        data["window_presets"] = list(self.window_presets)
        data["warnings"] = list(self.warnings)
        return data


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _spacing(ds: Any) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword, None)
        try:
            if value is not None and len(value) == 2:
                return float(value[0]), float(value[1])
        except (TypeError, ValueError):
            continue
    return None


def _short_text(value: Any, limit: int = 16) -> str:
    """A code string (CS) value, trimmed; never free text."""
    text = str(value or "").strip()
    return text[:limit] if re.fullmatch(r"[A-Z0-9 _\\-]*", text) else ""


def extract_meta(ds: Any, file_name: str, *, window_presets: tuple[str, ...] = (),
                 warnings: tuple[str, ...] = ()) -> DicomMeta:
    """Build the PHI-free record of a dataset (technical allow-list only).

    Args:
        ds: a pydicom Dataset (header only is enough).
        file_name: the base name of the file (uploads are renamed by the caller if needed).
        window_presets: names of the presets the image offers.
        warnings: one-line, PHI-free warnings collected while reading.
    """
    view, view_source = infer_view(ds)
    meta = getattr(ds, "file_meta", None)
    transfer_syntax = meta.get("TransferSyntaxUID", None) if meta is not None else None
    sop_class = ds.get("SOPClassUID", None)
    return DicomMeta(
        file_name=file_name,
        study_key=opaque_key("study", ds.get("StudyInstanceUID", None)),
        series_key=opaque_key("series", ds.get("SeriesInstanceUID", None)),
        instance_key=opaque_key("instance", ds.get("SOPInstanceUID", None)),
        series_number=_int_or_none(ds.get("SeriesNumber", None)),
        instance_number=_int_or_none(ds.get("InstanceNumber", None)),
        sop_class=getattr(sop_class, "name", str(sop_class or "")),
        modality=_short_text(ds.get("Modality", "")),
        view=view,
        view_source=view_source,
        rows=_int_or_none(ds.get("Rows", 0)) or 0,
        columns=_int_or_none(ds.get("Columns", 0)) or 0,
        frames=_int_or_none(ds.get("NumberOfFrames", 1)) or 1,
        samples_per_pixel=_int_or_none(ds.get("SamplesPerPixel", 1)) or 1,
        bits_allocated=_int_or_none(ds.get("BitsAllocated", 0)) or 0,
        bits_stored=_int_or_none(ds.get("BitsStored", 0)) or 0,
        pixel_representation=_int_or_none(ds.get("PixelRepresentation", 0)) or 0,
        photometric=_short_text(ds.get("PhotometricInterpretation", "")),
        transfer_syntax=getattr(transfer_syntax, "name", str(transfer_syntax or "")),
        body_part=_short_text(ds.get("BodyPartExamined", "")),
        image_laterality=_short_text(ds.get("ImageLaterality", "")),
        presentation_intent=_short_text(ds.get("PresentationIntentType", ""), 20),
        pixel_spacing_mm=_spacing(ds),
        window_presets=tuple(window_presets),
        warnings=tuple(warnings),
    )
