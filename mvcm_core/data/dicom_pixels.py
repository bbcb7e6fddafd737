"""Pixel decoding and the modality LUT for :mod:`mvcm_core.data.dicom` (pydicom + numpy, no torch)."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder, pixel_array
from pydicom.pixels.utils import _get_jpg_parameters

from mvcm_core.data.dicom_j2k import codestream_info, decode_j2k_reduced, first_frame_stream

CODESTREAM_SYNTAX_PREFIX = "1.2.840.10008.1.2.4."  # JPEG, JPEG-LS, JPEG 2000: frames carry their own geometry

# which package decodes what (python-gdcm decodes all of them)
_DECODER_HINT = {
    "1.2.840.10008.1.2.4.50": "python-gdcm (or pillow)",
    "1.2.840.10008.1.2.4.51": "python-gdcm (or pillow)",
    "1.2.840.10008.1.2.4.57": "python-gdcm",
    "1.2.840.10008.1.2.4.70": "python-gdcm",
    "1.2.840.10008.1.2.4.80": "python-gdcm (or pyjpegls)",
    "1.2.840.10008.1.2.4.81": "python-gdcm (or pyjpegls)",
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.5": "pylibjpeg-rle",
}
# JPEG processes imagecodecs can decode when pydicom's plugins cannot (e.g. 12-bit JPEG Extended)
_IMAGECODECS_SYNTAXES = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
                         "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}
_NOT_GDCM = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"}
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def decoder_hint(transfer_syntax_uid: str) -> str:
    """The package to install to decode a transfer syntax."""
    return _DECODER_HINT.get(str(transfer_syntax_uid), "python-gdcm")


@contextlib.contextmanager
def silence_native_stderr() -> Iterator[None]:
    """Silence what C decoders (OpenJPEG, GDCM) print on file descriptor 2 (single-threaded CLIs only)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _decode_with_imagecodecs(ds: Dataset) -> np.ndarray | None:
    """Fallback for JPEG streams pydicom's plugins refuse (e.g. 12-bit JPEG Extended); grayscale only."""
    if str(ds.file_meta.TransferSyntaxUID) not in _IMAGECODECS_SYNTAXES or int(ds.get("SamplesPerPixel", 1)) != 1:
        return None
    try:
        import imagecodecs
    except ImportError:
        return None
    fragment = first_frame_stream(ds)
    if fragment is None:
        return None
    frame = np.asarray(imagecodecs.jpeg_decode(fragment))
    if int(ds.get("PixelRepresentation", 0) or 0) == 1 and frame.dtype.kind == "u":
        bits = int(ds.BitsStored)
        signed = frame.astype(np.int32)
        frame = np.where(signed >= 2 ** (bits - 1), signed - 2**bits, signed)  # two's complement in BitsStored
    return frame


def _jpeg_size(stream: bytes) -> tuple[int, int] | None:
    """(rows, columns) from a JPEG / JPEG-LS start-of-frame segment."""
    try:
        info = _get_jpg_parameters(bytes(stream[:65536]))
    except Exception:  # noqa: BLE001 - a header pydicom cannot parse: let the decoder judge it
        return None
    return (int(info["height"]), int(info["width"])) if "height" in info and "width" in info else None


def stream_size(ds: Dataset, stream: bytes | None = None) -> tuple[int, int] | None:
    """(rows, columns) the first compressed frame declares in its own codestream header, if readable.

    Decoders allocate what the codestream says, not what the DICOM header says: a 1 KB file whose
    64×64 header wraps a 20000×20000 JPEG 2000 stream would take gigabytes to decode. ``stream`` is
    frame 0's codestream when the caller has already gathered it.
    """
    syntax = str(ds.file_meta.TransferSyntaxUID)
    if not syntax.startswith(CODESTREAM_SYNTAX_PREFIX):
        return None  # RLE and deflate decode to the header's geometry
    stream = first_frame_stream(ds) if stream is None else stream
    if stream is None:
        return None
    if not syntax.startswith("1.2.840.10008.1.2.4.9"):
        return _jpeg_size(stream)
    info = codestream_info(stream[:65536])
    return None if info is None else (info["rows"], info["cols"])


def decode_first_frame(ds: Dataset, max_side: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Decode frame 0 of a validated dataset into a 2-D grayscale array.

    Colour (RGB, YBR converted to RGB by the decoder, palette colour) becomes luminance. With
    ``max_side``, a grey JPEG 2000 frame may come back at half resolution, never below ``max_side``
    (:mod:`mvcm_core.data.dicom_j2k`).

    Raises:
        mvcm_core.data.dicom.DicomRejected: missing decoder or corrupt stream, in one line.
    """
    from mvcm_core.data.dicom import DicomRejected  # local import: dicom imports this module

    transfer_syntax = ds.file_meta.TransferSyntaxUID
    notes: list[str] = []
    rows, cols = int(ds.Rows), int(ds.Columns)
    stream = first_frame_stream(ds) if str(transfer_syntax).startswith(CODESTREAM_SYNTAX_PREFIX) else None
    declared = stream_size(ds, stream) if stream is not None else None
    if declared is not None and declared != (rows, cols):
        raise DicomRejected(f"compressed stream is {declared[0]}×{declared[1]} but the header says {rows}×{cols}")
    if max_side and stream is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reduced = decode_j2k_reduced(ds, max_side, stream)
        if reduced is not None:
            return reduced[0], notes
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame = _decode_pixels(ds)
    except BaseException as exc:  # noqa: BLE001 - decoders raise anything (Rust plugins: PanicException)
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        if transfer_syntax.is_compressed and not get_decoder(transfer_syntax).is_available:
            raise DicomRejected(
                f"no decoder for {transfer_syntax.name}: install {decoder_hint(transfer_syntax)}") from None
        detail = "" if isinstance(exc, RuntimeError) else f" ({type(exc).__name__})"
        raise DicomRejected(f"cannot decode the {transfer_syntax.name} pixel data{detail}") from None
    if frame.ndim == 3 and frame.shape[-1] in (3, 4):
        frame = frame[..., :3].astype(np.float32) @ _LUMA  # [rows, cols, 3] -> [rows, cols]
    elif frame.ndim == 3:  # the decoder returned several frames although index=0 was asked
        frame = frame[0]
    if frame.ndim != 2:
        raise DicomRejected(f"decoded pixel array has an unexpected shape {frame.shape}")
    if frame.shape != (rows, cols):
        raise DicomRejected(f"decoded image is {frame.shape[0]}×{frame.shape[1]}, header says {rows}×{cols}")
    return frame, notes


def _decode_pixels(ds: Dataset) -> np.ndarray:
    """pydicom's plugins first, imagecodecs as the fallback for JPEG they refuse.

    JPEG Baseline / Extended never reach GDCM: on a corrupt stream its JPEG codec throws an uncaught
    C++ exception that aborts the whole process (found by the fuzzer); Pillow and imagecodecs raise.
    """
    syntax = str(ds.file_meta.TransferSyntaxUID)
    plugin = "pillow" if syntax in _NOT_GDCM and "pillow" in get_decoder(syntax).available_plugins else ""
    try:
        frame = pixel_array(ds, index=0, decoding_plugin=plugin)
    except (RuntimeError, NotImplementedError, ValueError):
        frame = _decode_with_imagecodecs(ds)
        if frame is None:
            raise
    if str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
        frame = apply_color_lut(frame, ds)
    return frame


def modality_values(frame: np.ndarray, ds: Dataset) -> np.ndarray:
    """Apply the modality LUT (rescale slope / intercept or a Modality LUT Sequence) → float32."""
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return frame.astype(np.float32, copy=False)
    linear = _linear_rescale(frame, ds)
    if linear is not None:
        return linear
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = apply_modality_lut(frame, ds)
    except Exception:  # noqa: BLE001 - a broken modality LUT falls back to the stored values
        values = frame
    values = values.astype(np.float32, copy=False)
    if not np.isfinite(values).all():
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    return values


def _rescale(ds: Dataset) -> tuple[float, float] | None:
    """``(RescaleSlope, RescaleIntercept)`` with the identity defaults; None when they are not numbers."""
    try:
        return float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    except (TypeError, ValueError):
        return None


def _linear_rescale(frame: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """Rescale slope / intercept in float32, in place on one copy (None: not the simple integer case)."""
    if "ModalityLUTSequence" in ds or frame.dtype.kind not in "iu" or (rescale := _rescale(ds)) is None:
        return None
    slope, intercept = rescale
    if not (np.isfinite(slope) and np.isfinite(intercept)) or max(abs(slope), abs(intercept)) > 1e30:
        return None
    values = frame.astype(np.float32)
    if slope != 1.0:
        values *= np.float32(slope)
    if intercept != 0.0:
        values += np.float32(intercept)
    return values


def stored_range(ds: Dataset, frame: np.ndarray) -> tuple[float, float]:
    """The representable range of modality values (BitsStored, signedness, rescale)."""
    bits = int(ds.get("BitsStored", 0) or 0) or int(frame.dtype.itemsize * 8)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        low, high = 0, 2**bits - 1
    slope, intercept = _rescale(ds) or (1.0, 0.0)
    ends = sorted((low * slope + intercept, high * slope + intercept))
    return float(ends[0]), float(ends[1])


def lut_from_item(item: Dataset) -> tuple[tuple[int, int, int], np.ndarray] | None:
    """(descriptor, data) of a VOI LUT Sequence item, or None if it is unusable."""
    try:
        descriptor = [int(v) for v in item.LUTDescriptor]
        entries, first, bits = descriptor[0], descriptor[1], descriptor[2]
        raw = item.LUTData
    except (AttributeError, IndexError, TypeError, ValueError, KeyError):
        return None
    if isinstance(raw, (bytes, bytearray)):
        data = np.frombuffer(raw, dtype="<u2" if bits > 8 or len(raw) >= 2 * (entries or 65536) else "u1")
    else:
        data = np.asarray(raw if isinstance(raw, (list, tuple)) or hasattr(raw, "__len__") else [raw])
    if data.size == 0:
        return None
    return (entries, first, bits), data.astype(np.float32)
