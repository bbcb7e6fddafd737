"""Reduced-resolution JPEG 2000 decoding, for callers that only need a small image (the model input).

A JPEG 2000 codestream is a wavelet pyramid: decoding it with ``reduce = r`` skips the ``r`` finest
levels and returns the low-pass band at ``ceil(size / 2^r)``, which is an antialiased downsample of
the image at a fraction of the work. pydicom's plugins do not expose ``r``.

Only unsigned single-component codestreams are taken. OpenJPEG's C API (:mod:`~mvcm_core.data.openjp2`)
skips as many levels as keep the longest side ≥ ``max_side`` (RG1 lossless → 128 px: ``r = 3``, about
20× less work); without it, Pillow's binding skips one (it reports a broken stream for the 16-bit RG1
codestreams at ``r >= 2``). Anything else returns None and the caller decodes at full resolution.
pydicom + Pillow + numpy + ctypes, no torch.
"""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from mvcm_core.data import openjp2

J2K_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"})
PILLOW_MAX_REDUCE = 1


def codestream_info(stream: bytes) -> dict[str, int] | None:
    """Geometry, components, precision, signedness and wavelet levels of a JPEG 2000 codestream, or None.

    Reads the SIZ marker segment (raw codestream or inside a JP2 box) and the COD segment after it;
    ``levels`` is 0 when no COD segment follows within 4 KB.
    """
    siz = stream.find(b"\xff\x4f\xff\x51", 0, 4096)
    if siz < 0 or len(stream) < siz + 44:
        return None
    xsiz, ysiz, x0, y0 = (int.from_bytes(stream[siz + 8 + 4 * i:siz + 12 + 4 * i], "big") for i in range(4))
    ssiz = stream[siz + 42]
    siz_end = siz + 4 + int.from_bytes(stream[siz + 4:siz + 6], "big")  # marker + Lsiz bytes
    cod = stream.find(b"\xff\x52", siz_end, siz_end + 4096)
    return {"rows": max(ysiz - y0, 0), "cols": max(xsiz - x0, 0),
            "components": int.from_bytes(stream[siz + 40:siz + 42], "big"),
            "precision": (ssiz & 0x7F) + 1, "signed": ssiz >> 7,
            "levels": stream[cod + 9] if 0 <= cod and len(stream) >= cod + 10 else 0}


def reduce_for(rows: int, cols: int, max_side: int, levels: int) -> int:
    """The most levels (≤ ``levels``) to skip while the longest side stays ≥ ``max_side``."""
    reduce = 0
    while reduce < levels and -(-max(rows, cols) // 2 ** (reduce + 1)) >= max_side:
        reduce += 1
    return reduce


def first_frame_stream(ds: Dataset) -> bytes | None:
    """The codestream of frame 0 of an encapsulated dataset, or None when the encapsulation is broken."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    try:
        return next(generate_frames(ds.PixelData, number_of_frames=frames))
    except Exception:  # noqa: BLE001 - broken encapsulation: the full decode reports it
        return None


def decode_j2k_reduced(ds: Dataset, max_side: int, stream: bytes | None = None) -> tuple[np.ndarray, int] | None:
    """Frame 0 of a JPEG 2000 dataset at ``1 / 2^r`` resolution, as ``(frame, r)``; None to decode in full.

    The frame is ``[ceil(rows / 2^r), ceil(cols / 2^r)]`` in the stored values' scale (Pillow's
    16-bit output of a lower-precision codestream is shifted back). ``stream`` is frame 0's
    codestream when the caller has already gathered it.
    """
    if str(ds.file_meta.TransferSyntaxUID) not in J2K_SYNTAXES:
        return None
    if int(ds.get("NumberOfFrames", 1) or 1) != 1 or int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return None
    if str(ds.get("PhotometricInterpretation", "")).upper() not in ("MONOCHROME1", "MONOCHROME2"):
        return None
    stream = first_frame_stream(ds) if stream is None else stream
    info = None if stream is None else codestream_info(stream)
    if info is None or info["components"] != 1 or info["signed"] or info["precision"] > 16:
        return None
    rows, cols = int(ds.Rows), int(ds.Columns)
    reduce = reduce_for(rows, cols, max_side, info["levels"])
    decoded = openjp2.decode_reduced(stream, reduce) if reduce else None
    if decoded is not None and decoded[0].shape == _reduced_shape(rows, cols, reduce):
        return decoded[0].astype(np.uint16), reduce
    reduce = min(reduce, PILLOW_MAX_REDUCE)
    return _pillow_reduced(stream, reduce, rows, cols, info["precision"]) if reduce else None


def _reduced_shape(rows: int, cols: int, reduce: int) -> tuple[int, int]:
    return -(-rows // 2 ** reduce), -(-cols // 2 ** reduce)


def levels_skipped(full_shape: tuple[int, int], band_shape: tuple[int, int]) -> int:
    """How many wavelet levels a decoded band of ``band_shape`` skipped from ``full_shape``.

    Raises:
        ValueError: ``band_shape`` is no ``ceil(full / 2^r)`` of ``full_shape``.
    """
    for reduce in range(1, 33):
        if _reduced_shape(*full_shape, reduce) == tuple(band_shape):
            return reduce
    raise ValueError(f"a {band_shape} frame is no reduced band of a {full_shape} image")


def _pillow_reduced(stream: bytes, reduce: int, rows: int, cols: int, precision: int
                    ) -> tuple[np.ndarray, int] | None:
    """The same through Pillow's OpenJPEG binding (``Image.reduce``), or None."""
    from PIL import Image, features

    if not features.check("jpg_2000"):
        return None
    try:
        image = Image.open(io.BytesIO(stream))
        image.reduce = reduce  # Pillow's JPEG 2000 plugin: resolution levels to discard when loading
        image.load()
    except (OSError, ValueError, SyntaxError):
        return None
    frame = np.asarray(image)
    if frame.shape != _reduced_shape(rows, cols, reduce):
        return None
    if image.mode == "I;16" and precision < 16:
        frame = frame >> (16 - precision)  # Pillow scales a p-bit codestream to 16 bits
    return frame, reduce
