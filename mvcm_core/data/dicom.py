"""Read one DICOM radiograph safely: detect, validate, decode, window (pydicom + numpy only, no torch).

Pipeline of :func:`read_dicom`:

1. detect DICOM by content (``DICM`` at byte 128), never by extension, and never ``force``-read;
2. read the header with large values deferred, so nothing big is allocated yet;
3. validate: allow-listed image SOP classes only (CR, DX, mammography / intra-oral X-ray, secondary
   capture); pixel data present; declared size below :class:`Limits`; the native pixel buffer as
   long as Rows × Columns × SamplesPerPixel × frames × BitsAllocated implies; nothing truncated;
4. decode the first frame only (a warning for multi-frame), RGB / YBR / palette to grayscale;
5. modality LUT (rescale slope / intercept or LUT), then the file's VOI window or LUT (or a
   preset), then MONOCHROME1 inversion within the output range.

Every failure becomes :class:`DicomRejected` with a one-line, PHI-free reason.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.pixels.utils import get_expected_length
from pydicom.tag import Tag

from mvcm_core.data.dicom_j2k import levels_skipped
from mvcm_core.data.dicom_meta import DicomMeta, extract_meta
from mvcm_core.data.dicom_pixels import decode_first_frame, lut_from_item, modality_values, stored_range
from mvcm_core.data.imageops import resize_band, resize_longest
from mvcm_core.data.windowing import WindowPreset, generic_presets, to_display

PREAMBLE_LENGTH = 128
MAGIC = b"DICM"
PIXEL_DATA_TAG = Tag(0x7FE0, 0x0010)
UNDEFINED_LENGTH = 0xFFFFFFFF
DEFLATED = "1.2.840.10008.1.2.1.99"
_HEADER_ERRORS = (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError, NotImplementedError,
                  OverflowError, MemoryError, IndexError, RecursionError, zlib.error, struct.error,
                  BytesLengthException)
_JPEG_FAMILY = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
                "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
# allow-list: projection radiography and screenshots of it
ALLOWED_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.1": "CR",
    "1.2.840.10008.5.1.4.1.1.1.1": "DX for presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "DX for processing",
    "1.2.840.10008.5.1.4.1.1.1.2": "mammography for presentation",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "mammography for processing",
    "1.2.840.10008.5.1.4.1.1.1.3": "intra-oral X-ray for presentation",
    "1.2.840.10008.5.1.4.1.1.1.3.1": "intra-oral X-ray for processing",
    "1.2.840.10008.5.1.4.1.1.7": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.7.2": "multi-frame grayscale byte SC",
    "1.2.840.10008.5.1.4.1.1.7.3": "multi-frame grayscale word SC",
    "1.2.840.10008.5.1.4.1.1.7.4": "multi-frame true colour SC",
}
# non-image families, by UID prefix, with the reason given to the user
_REJECTED_FAMILIES = (
    ("1.2.840.10008.5.1.4.1.1.88.", "structured report / key object, not an image"),
    ("1.2.840.10008.5.1.4.1.1.11.", "presentation state, not an image"),
    ("1.2.840.10008.5.1.4.1.1.481.", "radiotherapy object, not a radiograph"),
    ("1.2.840.10008.5.1.4.1.1.104.", "encapsulated document (PDF/CDA), not an image"),
    ("1.2.840.10008.5.1.4.1.1.9.", "waveform, not an image"),
    ("1.2.840.10008.5.1.4.1.1.66", "raw data / registration / segmentation object, not a radiograph"),
)


class DicomRejected(ValueError):
    """A file that cannot be used; ``str(exc)`` is a one-line, PHI-free reason."""


@dataclass(frozen=True)
class Limits:
    """Bounds on what is read (configurable; the defaults fit radiographs and 24 GB machines).

    Attributes:
        max_file_bytes: files larger than this are refused before parsing.
        max_pixels: Rows × Columns above this are refused before decoding (decompression bombs).
        max_frame_bytes: bytes of one decoded frame above this are refused before decoding.
    """

    max_file_bytes: int = 256 * 1024**2
    max_pixels: int = 40_000_000
    max_frame_bytes: int = 320 * 1024**2


@dataclass
class DicomImage:
    """A decoded radiograph.

    Attributes:
        values: ``[rows, cols]`` float32 modality values (after rescale, before VOI).
        display: ``[rows, cols]`` float32 in [0, 1], 1 = white, windowed with ``preset``.
        meta: PHI-free technical record.
        presets: the file's own windows / VOI LUTs first, then the generic presets.
        preset: the preset used for ``display``.
        inverted: True if the display is inverted (MONOCHROME1 or an INVERSE presentation LUT).
    """

    values: np.ndarray
    display: np.ndarray
    meta: DicomMeta
    presets: list[WindowPreset]
    preset: WindowPreset
    inverted: bool
    stored_range: tuple[float, float] = (0.0, 1.0)
    voi_luts: list[tuple[tuple[int, int, int], np.ndarray]] = field(default_factory=list)

    def render(self, preset_name: str | None = None) -> np.ndarray:
        """Display image for a preset name (default: the one used for ``display``)."""
        if preset_name is None or preset_name == self.preset.name:
            return self.display
        matches = [p for p in self.presets if p.name == preset_name]
        if not matches:
            raise KeyError(f"unknown window preset {preset_name!r}; have {[p.name for p in self.presets]}")
        preset = matches[0]
        voi_lut = self.voi_luts[preset.lut_index] if preset.kind == "voi_lut" else None
        return to_display(self.values, preset, inverted=self.inverted, stored_range=self.stored_range,
                          voi_lut=voi_lut)


def sniff_kind(path: str | Path) -> str:
    """``dicom``, ``png``, ``jpeg`` or ``unknown``, from the file's first bytes only."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(PREAMBLE_LENGTH + len(MAGIC))
    except OSError:
        return "unknown"
    if head[PREAMBLE_LENGTH:PREAMBLE_LENGTH + 4] == MAGIC:
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    return "unknown"


def describe_non_dicom(path: str | Path, kind: str | None = None) -> str:
    """One line saying why a file is not accepted as DICOM Part 10."""
    kind = kind or sniff_kind(path)
    if kind in ("png", "jpeg"):
        return f"not a DICOM file (a {kind.upper()} image)"
    try:
        with open(path, "rb") as handle:
            head = handle.read(PREAMBLE_LENGTH + len(MAGIC))
    except OSError:
        return "unreadable file"
    if not head:
        return "empty file"
    if len(head) < PREAMBLE_LENGTH + len(MAGIC):
        return f"not a DICOM file (only {len(head)} bytes)"
    if head[:2] in (b"\x08\x00", b"\x00\x08", b"\x02\x00"):
        return "DICOM without the Part 10 preamble and DICM marker (raw dataset): not accepted"
    return "not a DICOM, PNG or JPEG file (no DICM marker at byte 128)"


def read_header(path: str | Path, limits: Limits | None = None, *, whole: bool = False) -> Dataset:
    """Read a DICOM header with large values deferred (nothing big is allocated).

    ``whole=True`` reads the (size-checked) file into memory in one call instead, for callers that
    decode the pixels anyway: one read instead of the deferred value's many small ones.

    Raises:
        DicomRejected: not a DICOM Part 10 file, too large, or an unreadable header.
    """
    limits = limits or Limits()
    path = Path(path)
    if not path.is_file():
        raise DicomRejected("not a file")
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise DicomRejected(f"file is {size:,} bytes, above the {limits.max_file_bytes:,}-byte limit")
    kind = sniff_kind(path)
    if kind != "dicom":
        raise DicomRejected(describe_non_dicom(path, kind))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _check_deflated(path, limits)
            if whole:
                return pydicom.dcmread(io.BytesIO(path.read_bytes()))
            return pydicom.dcmread(path, defer_size="256 KB")
    except DicomRejected:
        raise
    except InvalidDicomError:
        raise DicomRejected("invalid DICOM header") from None
    except _HEADER_ERRORS as exc:
        raise DicomRejected(f"unreadable DICOM header ({type(exc).__name__})") from None


def _check_deflated(path: Path, limits: Limits) -> None:
    """A deflated dataset is inflated whole by pydicom: measure it first, in bounded chunks (zip bombs)."""
    with open(path, "rb") as handle:
        read_preamble(handle, False)
        meta = _read_file_meta_info(handle)
        if str(meta.get("TransferSyntaxUID", "")) != DEFLATED:
            return
        inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
        while chunk := handle.read(1 << 20):
            while chunk:
                total += len(inflater.decompress(chunk, 1 << 22))
                chunk = inflater.unconsumed_tail
                if total > limits.max_file_bytes:
                    raise DicomRejected(
                        f"deflated dataset inflates beyond the {limits.max_file_bytes / 1e6:.0f} MB limit")


def check_image_header(ds: Dataset, path: str | Path, limits: Limits | None = None) -> list[str]:
    """Validate a header before any pixel is decoded; return PHI-free warnings.

    Raises:
        DicomRejected: with the reason the file cannot be used as a radiograph.
    """
    limits = limits or Limits()
    meta = getattr(ds, "file_meta", Dataset())
    media_class = str(meta.get("MediaStorageSOPClassUID", "") or "")
    if media_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        raise DicomRejected("DICOMDIR (media directory), not an image; its referenced files are read instead")
    sop_class = str(ds.get("SOPClassUID", "") or media_class)
    if not sop_class:
        raise DicomRejected("no SOP Class UID")
    if len(sop_class) > 64 or not _UID.fullmatch(sop_class):
        raise DicomRejected("invalid SOP Class UID (not a dotted number of at most 64 characters)")
    if sop_class not in ALLOWED_SOP_CLASSES:
        for prefix, reason in _REJECTED_FAMILIES:
            if sop_class.startswith(prefix):
                raise DicomRejected(f"{reason} ({_uid_name(sop_class)})")
        raise DicomRejected(f"unsupported SOP class {_uid_name(sop_class)}: only CR, DX and secondary capture")
    if "PixelData" not in ds:
        kinds = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        raise DicomRejected(f"{kinds[0]} is not supported" if kinds else "no pixel data")
    if "TransferSyntaxUID" not in meta:
        raise DicomRejected("no transfer syntax in the file meta information")
    _check_geometry(ds, limits)
    _check_pixel_buffer(ds, Path(path))
    return _header_warnings(ds, sop_class)


def _uid_name(uid: str) -> str:
    name = pydicom.uid.UID(uid).name
    return name if name and name != uid else uid


def _check_geometry(ds: Dataset, limits: Limits) -> None:
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.BitsAllocated)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        raise DicomRejected("missing or invalid Rows / Columns / BitsAllocated") from None
    if rows <= 0 or cols <= 0 or frames <= 0 or samples not in (1, 3) or bits not in (1, 8, 16, 32):
        raise DicomRejected(f"invalid image geometry ({rows}×{cols}, {samples} samples, {bits} bits, {frames} frames)")
    try:
        stored = int(ds.get("BitsStored", bits) or bits)
    except (TypeError, ValueError):
        raise DicomRejected("invalid BitsStored") from None
    if not 0 < stored <= bits:
        raise DicomRejected(f"BitsStored {stored} is not within BitsAllocated {bits}")
    syntax = str(getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID", ""))
    if syntax in _JPEG_FAMILY and (bits not in (8, 16) or stored > 16):
        # the JPEG / JPEG-LS codecs (GDCM) abort the whole process on other depths: refuse first
        raise DicomRejected(f"JPEG pixel data must be 8 or 16 bits allocated, at most 16 stored (got {bits}/{stored})")
    if rows * cols > limits.max_pixels:
        raise DicomRejected(f"image of {rows}×{cols} pixels exceeds the {limits.max_pixels:,}-pixel limit")
    frame_bytes = rows * cols * samples * max(bits, 8) // 8
    if frame_bytes > limits.max_frame_bytes:
        raise DicomRejected(f"one frame would take {frame_bytes / 1e6:.0f} MB, above the limit")


def _check_pixel_buffer(ds: Dataset, path: Path) -> None:
    """Native data: the buffer must be as long as the header implies; nothing may run past EOF."""
    element = ds._dict.get(PIXEL_DATA_TAG)  # the raw element: reading ``ds.PixelData`` would load it
    length = getattr(element, "length", None)
    value_tell = getattr(element, "value_tell", None)
    undefined = length is None or length == UNDEFINED_LENGTH
    deflated = str(ds.file_meta.TransferSyntaxUID) == DEFLATED  # offsets are in the inflated stream
    if not undefined and not deflated and value_tell is not None and value_tell + length > path.stat().st_size:
        raise DicomRejected("truncated file: pixel data runs past the end of the file")
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        if not undefined and length < 16:
            raise DicomRejected("compressed pixel data is empty")
        return
    if undefined and length is not None:
        raise DicomRejected("pixel data is encapsulated but the transfer syntax says uncompressed")
    if length is None:  # already converted (small files): measure the value itself
        length = len(ds.PixelData or b"")
    try:
        expected = get_expected_length(ds)
    except (AttributeError, TypeError, ValueError, KeyError):
        raise DicomRejected("cannot work out the pixel buffer size from the header") from None
    if length < expected:
        raise DicomRejected(f"pixel data is {length:,} bytes, header implies {expected:,} (truncated or wrong header)")


def _header_warnings(ds: Dataset, sop_class: str) -> list[str]:
    notes = []
    if sop_class.endswith(".1.1.1.1") or sop_class.endswith(".1.1.2.1") or sop_class.endswith(".1.1.3.1"):
        notes.append("'for processing' image: raw detector data, not display-ready")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        notes.append(f"multi-frame image ({frames} frames): only the first frame is used")
    if int(ds.get("SamplesPerPixel", 1) or 1) == 3:
        notes.append("colour image converted to grayscale")
    if min(int(ds.Rows), int(ds.Columns)) < 64:
        notes.append(f"very small image ({int(ds.Rows)}×{int(ds.Columns)})")
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        notes.append("burned-in annotation: the pixels may show text")
    return notes


def _file_presets(ds: Dataset) -> tuple[list[WindowPreset], list[tuple[tuple[int, int, int], np.ndarray]]]:
    """The file's own VOI windows and LUTs, named by their explanation."""
    presets: list[WindowPreset] = []
    centers, widths = ds.get("WindowCenter", None), ds.get("WindowWidth", None)
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR")
    if centers is not None and widths is not None:
        centers = list(centers) if isinstance(centers, pydicom.multival.MultiValue) else [centers]
        widths = list(widths) if isinstance(widths, pydicom.multival.MultiValue) else [widths]
        explanations = ds.get("WindowCenterWidthExplanation", None) or []
        explanations = [explanations] if isinstance(explanations, str) else list(explanations)
        for i, (center, width) in enumerate(zip(centers, widths)):
            label = str(explanations[i]).strip() if i < len(explanations) and explanations[i] else f"window {i + 1}"
            presets.append(WindowPreset(f"file: {label}", "window", float(center), float(width), function))
    luts = []
    for i, item in enumerate(ds.get("VOILUTSequence", None) or []):
        lut = lut_from_item(item)
        if lut is None:
            continue
        label = str(item.get("LUTExplanation", "") or f"LUT {i + 1}").strip()
        presets.append(WindowPreset(f"file: {label}", "voi_lut", lut_index=len(luts)))
        luts.append(lut)
    return presets, luts


def read_dicom(path: str | Path, *, limits: Limits | None = None, preset: str | None = None,
               max_side: int | None = None) -> DicomImage:
    """Read, validate, decode and window one DICOM radiograph.

    Args:
        path: the file (any name, any extension).
        limits: size limits (default :class:`Limits`).
        preset: window preset name; default: the file's first VOI LUT or window, else ``auto``.
        max_side: resize the modality values (antialiased) to this longest side *before* windowing,
            for callers that only need a small image (the model input). Resizing is linear, so the
            result equals window-then-resize wherever the window does not clip (the phantom's
            full-range window never does) and smooths the clip edge otherwise; far less work.

    Raises:
        DicomRejected: with a one-line reason.
    """
    path = Path(path)
    ds = read_header(path, limits, whole=True)
    try:
        return _read_image(ds, path, limits, preset, max_side)
    except DicomRejected:
        raise
    except _HEADER_ERRORS as exc:  # values pydicom converts lazily (wrong VR / length) fail here
        raise DicomRejected(f"invalid or inconsistent header values ({type(exc).__name__})") from None


def _read_image(ds: Dataset, path: Path, limits: Limits | None, preset: str | None,
                max_side: int | None = None) -> DicomImage:
    """Validate, decode and window a dataset read by :func:`read_header`."""
    notes = check_image_header(ds, path, limits)
    frame, decode_notes = decode_first_frame(ds, max_side)
    values = modality_values(frame, ds)
    full_shape = (int(ds.Rows), int(ds.Columns))
    if max_side and values.shape != full_shape:  # a JPEG 2000 low-pass band (dicom_j2k)
        values = resize_band(values, max_side, full_shape, levels_skipped(full_shape, values.shape))
    elif max_side and max(values.shape) > max_side:
        values = resize_longest(values, max_side)
    file_presets, luts = _file_presets(ds)
    presets = file_presets + generic_presets()
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    shape = str(ds.get("PresentationLUTShape", "IDENTITY") or "IDENTITY").upper()
    inverted = photometric == "MONOCHROME1" or (photometric == "MONOCHROME2" and shape == "INVERSE")
    chosen = next((p for p in presets if p.name == preset), None) if preset else presets[0]
    if chosen is None:
        raise DicomRejected(f"unknown window preset {preset!r}")
    voi_lut = luts[chosen.lut_index] if chosen.kind == "voi_lut" else None
    value_range = stored_range(ds, frame)
    display = to_display(values, chosen, inverted=inverted, stored_range=value_range, voi_lut=voi_lut)
    meta = extract_meta(ds, path.name, window_presets=tuple(p.name for p in presets),
                        warnings=tuple(notes + decode_notes))
    return DicomImage(values, display, meta, presets, chosen, inverted, value_range, luts)
