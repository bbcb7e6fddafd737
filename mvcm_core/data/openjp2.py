"""Reduced-resolution JPEG 2000 decoding through OpenJPEG's C API (ctypes), for small reads.

OpenJPEG can skip the ``r`` finest wavelet levels of a codestream and entropy-decode only the rest,
returning the low-pass band at ``ceil(size / 2^r)``. Pillow exposes this as ``Image.reduce`` but
reports a broken stream for the 16-bit RG1 codestreams at ``r >= 2``; the C library itself decodes
them (lossless RG1 1955×1841 → 245×231 at ``r = 3`` in ~16 ms, against ~300 ms in full). pydicom's
plugins, GDCM and imagecodecs do not expose ``r`` at all.

The library is looked up once: the system's ``libopenjp2``, else the copy bundled in Pillow's or
imagecodecs' wheel. Without one, :func:`decode_reduced` returns None and the caller falls back.
numpy + ctypes, no torch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
from pathlib import Path

import numpy as np

_READ = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
_SKIP = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)
_SEEK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int64, ctypes.c_void_p)
_END_OF_STREAM = ctypes.c_size_t(-1).value
_CODEC_J2K = 0  # OPJ_CODEC_J2K: a raw codestream, as DICOM encapsulates it
_PARAMETERS_BYTES = 1 << 15  # opj_dparameters_t is ~8.3 KB in OpenJPEG 2.x; room to spare


class _Component(ctypes.Structure):
    """``opj_image_comp_t`` (OpenJPEG 2.x; ``bpp`` is deprecated but still in the layout)."""

    _fields_ = [(name, ctypes.c_uint32) for name in
                ("dx", "dy", "w", "h", "x0", "y0", "prec", "bpp", "sgnd", "resno_decoded", "factor")] + [
        ("data", ctypes.POINTER(ctypes.c_int32)), ("alpha", ctypes.c_uint16)]


class _Image(ctypes.Structure):
    """``opj_image_t``."""

    _fields_ = [(name, ctypes.c_uint32) for name in ("x0", "y0", "x1", "y1", "numcomps")] + [
        ("color_space", ctypes.c_int), ("comps", ctypes.POINTER(_Component)),
        ("icc_profile_buf", ctypes.c_void_p), ("icc_profile_len", ctypes.c_uint32)]


def _candidates() -> list[str]:
    """Shared-library paths to try, the system's first."""
    found = [name for name in (ctypes.util.find_library("openjp2"),) if name]
    for package in ("PIL", "imagecodecs"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin:
            libs = Path(spec.origin).parent.parent / f"{'pillow' if package == 'PIL' else package}.libs"
            found += sorted(str(p) for p in libs.glob("libopenjp2*.so*"))
    return found


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Argument and result types of the functions used (pointers must not be truncated to int)."""
    void_p = ctypes.c_void_p
    lib.opj_version.restype = ctypes.c_char_p
    lib.opj_stream_create.restype, lib.opj_stream_create.argtypes = void_p, [ctypes.c_size_t, ctypes.c_int]
    for name in ("opj_stream_set_read_function", "opj_stream_set_skip_function", "opj_stream_set_seek_function"):
        getattr(lib, name).argtypes = [void_p, void_p]
    lib.opj_stream_set_user_data_length.argtypes = [void_p, ctypes.c_uint64]
    lib.opj_create_decompress.restype, lib.opj_create_decompress.argtypes = void_p, [ctypes.c_int]
    lib.opj_set_default_decoder_parameters.argtypes = [void_p]
    lib.opj_setup_decoder.argtypes = [void_p, void_p]
    lib.opj_read_header.argtypes = [void_p, void_p, ctypes.POINTER(ctypes.POINTER(_Image))]
    lib.opj_set_decoded_resolution_factor.argtypes = [void_p, ctypes.c_uint32]
    lib.opj_decode.argtypes = [void_p, void_p, ctypes.POINTER(_Image)]
    lib.opj_end_decompress.argtypes = [void_p, void_p]
    lib.opj_image_destroy.argtypes = [ctypes.POINTER(_Image)]
    lib.opj_destroy_codec.argtypes = lib.opj_stream_destroy.argtypes = [void_p]
    return lib


@functools.cache
def library() -> ctypes.CDLL | None:
    """OpenJPEG 2.x (with ``opj_set_decoded_resolution_factor``), or None when none can be loaded."""
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            if not hasattr(lib, "opj_set_decoded_resolution_factor"):
                continue
            lib = _declare(lib)
            if lib.opj_version().decode().startswith("2."):
                return lib
        except (OSError, AttributeError):
            continue
    return None


class _MemoryStream:
    """An OpenJPEG input stream reading ``data`` in place (the callbacks live as long as this object)."""

    def __init__(self, lib: ctypes.CDLL, data: bytes) -> None:
        self.data, self.size, self.position = data, len(data), 0
        self.base = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value  # bytes stay alive in self.data
        self.callbacks = (_READ(self._read), _SKIP(self._skip), _SEEK(self._seek))
        self.handle = lib.opj_stream_create(1 << 20, 1)
        for setter, callback in zip(("read", "skip", "seek"), self.callbacks):
            getattr(lib, f"opj_stream_set_{setter}_function")(self.handle, ctypes.cast(callback, ctypes.c_void_p))
        lib.opj_stream_set_user_data_length(self.handle, self.size)

    def _read(self, destination: int, count: int, _user: int) -> int:
        count = min(count, self.size - self.position)
        if count <= 0:
            return _END_OF_STREAM
        ctypes.memmove(destination, self.base + self.position, count)
        self.position += count
        return count

    def _skip(self, count: int, _user: int) -> int:
        count = max(-self.position, min(count, self.size - self.position))
        self.position += count
        return count

    def _seek(self, offset: int, _user: int) -> int:
        if not 0 <= offset <= self.size:
            return 0
        self.position = offset
        return 1


def decode_reduced(stream: bytes, reduce: int) -> tuple[np.ndarray, int] | None:
    """Component 0 of a raw J2K codestream at ``1 / 2^reduce`` resolution, as ``(int32 [h, w], precision)``.

    Returns None when OpenJPEG is unavailable or refuses the stream (the caller decodes another way).
    """
    lib = library()
    if lib is None:
        return None
    source = _MemoryStream(lib, stream)
    codec = lib.opj_create_decompress(_CODEC_J2K)
    parameters = ctypes.create_string_buffer(_PARAMETERS_BYTES)
    image = ctypes.POINTER(_Image)()
    try:
        lib.opj_set_default_decoder_parameters(parameters)
        if not (lib.opj_setup_decoder(codec, parameters) and lib.opj_read_header(source.handle, codec, ctypes.byref(image))
                and lib.opj_set_decoded_resolution_factor(codec, reduce)
                and lib.opj_decode(codec, source.handle, image) and lib.opj_end_decompress(codec, source.handle)):
            return None
        if image.contents.numcomps < 1:
            return None
        component = image.contents.comps[0]
        if component.factor != reduce or not component.data:
            return None
        pixels = np.ctypeslib.as_array(component.data, shape=(component.h, component.w)).copy()  # [h, w] int32
        return pixels, int(component.prec)
    finally:
        if image:
            lib.opj_image_destroy(image)
        lib.opj_destroy_codec(codec)
        lib.opj_stream_destroy(source.handle)
