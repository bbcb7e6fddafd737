"""Mutation fuzzer of DICOM ingestion: :func:`mvcm_core.data.study.load_studies` on hostile files.

Seeds are synthetic radiographs in every transfer syntax the reader decodes (native, RLE, JPEG 2000,
JPEG-LS, deflated, MONOCHROME1, signed, multi-frame, RGB secondary capture) plus the small image files
of pydicom's own corpus. Mutations: bit flips, truncation, huge declared lengths, wrong VRs, wrong
geometry (Rows / Columns), bogus transfer syntaxes, nested sequences, byte splices. Every case must
end in ``ok`` or a one-line ``rejected: <reason>`` within :data:`CASE_SECONDS` and without the
process's peak resident memory growing by more than ``--max-mb``; a reason beginning "unexpected
error" is a crash the reader did not handle, and fails the case too.

Run (the CI test runs a bounded 2,000 cases; this is the longer run)::

    python -m benchmarks.fuzz_dicom --cases 20000 --seed 1             # hypothesis engine
    python -m benchmarks.fuzz_dicom --engine atheris --seconds 600      # coverage-guided (pip install atheris)

Prints a JSON summary; exits 1 on the first failing case (shrunk by hypothesis), saved to ``--crash-dir``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CASE_SECONDS = 20.0  # generous: 2 shared cores; a typical case takes milliseconds
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
VR_CHOICES = [b"OB", b"OW", b"SQ", b"UN", b"US", b"UL", b"SS", b"FD", b"DS", b"IS", b"CS", b"PN", b"UT",
              b"AT", b"\x00\x00", b"ZZ"]
HUGE_LENGTHS = [0xFFFFFFFF, 0xFFFFFFFE, 0x7FFFFFFF, 0x10000000, 0xFFFF, 0xFFFE]
SYNTAXES = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
            "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
            "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5", "1.2.3.4.5.6.7.8.9", "", "1.2.840.10008.1.2.4.201"]


@dataclass(frozen=True)
class Element:
    """Where one top-level element sits in a file (byte offsets)."""

    start: int
    value_start: int
    length: int
    vr_offset: int | None  # explicit VR only
    length_offset: int
    length_size: int
    tag: int


def _synthetic_seeds() -> dict[str, bytes]:
    from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless

    from mvcm_core.data.dicom_write import build_radiograph_dataset

    rng = np.random.default_rng(0)
    pixels = (rng.random((40, 32)) * 4000).astype(np.uint16)
    seeds = {}
    variants = {"native": None, "rle": RLELossless, "j2k": JPEG2000Lossless, "jpegls": JPEGLSLossless,
                "deflated": DeflatedExplicitVRLittleEndian}
    for name, syntax in variants.items():
        ds = build_radiograph_dataset(pixels, study_key="fuzz", view="PA", window=(2000.0, 4000.0))
        if syntax is not None and syntax != DeflatedExplicitVRLittleEndian:
            try:
                ds.compress(syntax)
            except (RuntimeError, ValueError):  # no encoder for it here: that seed is left out
                continue
        elif syntax is not None:
            ds.file_meta.TransferSyntaxUID = syntax
        seeds[f"synthetic-{name}"] = _to_bytes(ds)
    mono1 = build_radiograph_dataset(pixels, study_key="fuzz1", view="LL", photometric="MONOCHROME1",
                                     sop_class="CR")
    seeds["synthetic-mono1-cr"] = _to_bytes(mono1)
    signed = build_radiograph_dataset(pixels.astype(np.int16) - 2000, study_key="fuzz2", sop_class="SC")
    signed.RescaleSlope, signed.RescaleIntercept = 2, -1024
    seeds["synthetic-signed-sc"] = _to_bytes(signed)
    frames = build_radiograph_dataset(pixels, study_key="fuzz3")
    frames.NumberOfFrames = 2
    frames.PixelData = frames.PixelData * 2
    seeds["synthetic-2-frames"] = _to_bytes(frames)
    return seeds


def _to_bytes(ds: object) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)  # type: ignore[attr-defined]
    return buffer.getvalue()


def corpus_seeds(max_bytes: int = 64_000) -> dict[str, bytes]:
    """Small image files of the pydicom corpus that pass the SOP-class allow-list, or are DICOMDIR / SR."""
    import pydicom

    folder = Path(pydicom.__file__).parent / "data" / "test_files"
    wanted = ("SC_rgb", "JPEG", "J2K", "RLE", "emri", "OBXXXX1A", "SC_jpeg", "GDCMJ2K", "JPGExtended", "test-SR",
              "liver", "rtdose_1frame", "DICOMDIR-nopatient")
    seeds = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.stat().st_size <= max_bytes and path.name.startswith(wanted):
            seeds[f"pydicom-{path.name}"] = path.read_bytes()
    return seeds


def all_seeds() -> dict[str, bytes]:
    """Synthetic seeds first, then the corpus ones (deterministic order)."""
    return {**_synthetic_seeds(), **corpus_seeds()}


def element_table(data: bytes) -> list[Element]:
    """Top-level elements of a Part 10 file (file meta explicit VR LE; dataset as its syntax says)."""
    from pydicom.filereader import _read_file_meta_info, data_element_generator, read_preamble

    elements: list[Element] = []
    handle = io.BytesIO(data)
    try:
        read_preamble(handle, False)
        start = handle.tell()
        meta = _read_file_meta_info(handle)
        end_meta = handle.tell()
        syntax = str(meta.get("TransferSyntaxUID", "1.2.840.10008.1.2.1"))
    except Exception:  # noqa: BLE001 - an unparsable seed has no element table
        return elements
    handle.seek(start)
    elements += _walk(handle, False, True, end_meta, data_element_generator)
    if syntax.endswith(".99"):
        return elements  # the deflated body is not addressable
    handle.seek(end_meta)
    elements += _walk(handle, syntax == "1.2.840.10008.1.2", syntax != "1.2.840.10008.1.2.2", len(data),
                      data_element_generator)
    return elements


def _walk(handle: io.BytesIO, implicit: bool, little: bool, stop: int, generator: Callable) -> list[Element]:
    out = []
    try:
        for raw in generator(handle, implicit, little, defer_size=1, stop_when=None):
            if raw.value_tell > stop:
                break
            vr = raw.VR.encode() if raw.VR and not implicit else None
            header = 8 if implicit or vr not in LONG_VRS else 12
            size = 4 if header == 12 or implicit else 2
            out.append(Element(raw.value_tell - header, raw.value_tell, raw.length,
                               None if implicit else raw.value_tell - header + 4,
                               raw.value_tell - size, size, int(raw.tag)))
            if raw.length == 0xFFFFFFFF:
                break  # undefined length: the generator cannot skip it without parsing
    except Exception:  # noqa: BLE001 - stop at the first element pydicom cannot walk
        pass
    return out


def mutate(data: bytes, op: str, a: int, b: int, c: int) -> bytes:
    """One mutation of ``data``; ``a``, ``b``, ``c`` are free integers that pick where and what."""
    if not data:
        return data
    buf = bytearray(data)
    n = len(buf)
    elements = element_table(data) if op in ("length", "vr", "geometry", "cut_element") else []
    if op == "flip":
        for k in range(1 + c % 8):
            pos = (a + k * (b | 1)) % n
            buf[pos] ^= 1 << ((b + k) % 8)
    elif op == "truncate":
        del buf[a % n:]
    elif op == "cut_element" and elements:
        element = elements[a % len(elements)]
        del buf[element.start + (b % max(element.value_start - element.start + 1, 1)):]
    elif op == "length" and elements:
        element = elements[a % len(elements)]
        value = HUGE_LENGTHS[b % len(HUGE_LENGTHS)] if c % 3 else (b * 7919) & 0xFFFFFFFF
        if element.length_size == 2:
            value &= 0xFFFF
        fmt = "<H" if element.length_size == 2 else "<I"
        buf[element.length_offset:element.length_offset + element.length_size] = struct.pack(fmt, value)
    elif op == "vr" and elements:
        element = elements[a % len(elements)]
        if element.vr_offset is not None:
            buf[element.vr_offset:element.vr_offset + 2] = VR_CHOICES[b % len(VR_CHOICES)]
    elif op == "geometry" and elements:
        targets = [e for e in elements if e.tag in (0x00280010, 0x00280011, 0x00280100, 0x00280002, 0x00280008)]
        if targets:
            element = targets[a % len(targets)]
            value = [0, 1, 0xFFFF, 0x8000, 4096, b & 0xFFFF][c % 6]
            width = min(element.length, 2) or 2
            buf[element.value_start:element.value_start + width] = value.to_bytes(4, "little")[:width]
    elif op == "splice":
        pos = a % n
        del buf[pos:pos + (b % 64)]
        buf[pos:pos] = bytes((c + i * 31) & 0xFF for i in range(c % 48))
    elif op == "syntax":
        return with_transfer_syntax(data, SYNTAXES[a % len(SYNTAXES)])
    return bytes(buf)


def with_transfer_syntax(data: bytes, syntax: str) -> bytes:
    """The same dataset bytes under a file meta that names another transfer syntax."""
    from pydicom.filereader import _read_file_meta_info, read_preamble
    from pydicom.filewriter import write_file_meta_info
    from pydicom.filebase import DicomBytesIO

    handle = io.BytesIO(data)
    try:
        preamble = read_preamble(handle, False) or b"\0" * 128
        meta = _read_file_meta_info(handle)
    except Exception:  # noqa: BLE001
        return data
    body = data[handle.tell():]
    meta.TransferSyntaxUID = syntax
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    try:
        write_file_meta_info(out, meta, enforce_standard=False)
    except Exception:  # noqa: BLE001 - a meta group pydicom cannot write back: keep the case as it was
        return data
    return preamble + b"DICM" + out.getvalue() + body


def nested_sequences(depth: int, undefined: bool) -> bytes:
    """A valid radiograph with a private sequence nested ``depth`` levels deep (raw bytes, any depth).

    ``undefined``: every sequence and item has undefined length and ends with its delimiter;
    otherwise the lengths are explicit.
    """
    from mvcm_core.data.dicom_write import build_radiograph_dataset

    base = _to_bytes(build_radiograph_dataset(np.zeros((8, 8), dtype=np.uint16), study_key="nest"))
    leaf = struct.pack("<HH2sH", 0x0008, 0x0104, b"LO", 8) + b"lateral "  # CodeMeaning
    body = leaf
    for _ in range(depth):
        if undefined:
            item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + body + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
            body = struct.pack("<HH2sHI", 0x0029, 0x1010, b"SQ", 0, 0xFFFFFFFF) + item
            body += struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
        else:
            item = struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body
            body = struct.pack("<HH2sHI", 0x0029, 0x1010, b"SQ", 0, len(item)) + item
    at = next(e.start for e in element_table(base) if e.tag > 0x00291010)
    return base[:at] + body + base[at:]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check_case(data: bytes, folder: Path, max_mb: float, companion: bytes | None = None) -> dict:
    """Read ``data`` (and an intact companion file) through study grouping; raise AssertionError on a failure.

    Returns:
        {"status": str, "seconds": float, "rss_growth_mb": float}
    """
    from mvcm_core.data.study import load_studies

    path = folder / "case"
    path.write_bytes(data)
    paths = [path]
    if companion is not None:
        (folder / "intact").write_bytes(companion)
        paths.append(folder / "intact")
    before, start = peak_rss_mb(), time.perf_counter()
    studies, records = load_studies(paths)
    seconds, growth = time.perf_counter() - start, peak_rss_mb() - before
    status = records[0].status if records else "no record"
    assert records and records[0].path == path, "the case produced no record"
    assert status == "ok" or status.startswith("rejected: "), status
    assert status.isprintable() and len(status) < 300, f"reason is not one short printable line: {status[:200]!r}"
    assert not records[0].reason.startswith("unexpected error"), f"unhandled crash: {status}"
    assert seconds < CASE_SECONDS, f"case took {seconds:.1f} s"
    assert growth < max_mb, f"peak memory grew by {growth:.0f} MB"
    for study in studies:
        for view in study.views:
            assert view.pixels.ndim == 2 and np.isfinite(view.pixels).all()
            assert 0.0 <= float(view.pixels.min()) and float(view.pixels.max()) <= 1.0
    return {"status": status, "seconds": seconds, "rss_growth_mb": growth}


def isolated_case(data: bytes, folder: Path, max_mb: float, companion: bytes | None = None) -> dict:
    """:func:`check_case` in a forked child, so a decoder that aborts the process is a failing case too.

    Raises:
        AssertionError: the case failed, or the child died (e.g. SIGABRT from a C++ decoder).
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)  # C decoders print on fd 2
        try:
            message = {"result": check_case(data, folder, max_mb, companion)}
        except AssertionError as exc:
            message = {"failure": str(exc)}
        except BaseException as exc:  # noqa: BLE001 - anything escaping the reader is a failure
            message = {"failure": f"uncaught {type(exc).__name__}: {str(exc)[:300]}"}
        os.write(write_end, json.dumps(message).encode()[:60_000])
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        raw = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not raw or status != 0:
        raise AssertionError(f"the reader killed the process (wait status {status})")
    message = json.loads(raw)
    if "failure" in message:
        raise AssertionError(message["failure"])
    return message["result"]


OPS = ["flip", "truncate", "cut_element", "length", "vr", "geometry", "splice", "syntax"]


def run_hypothesis(cases: int, seed: int, max_mb: float, crash_dir: Path | None = None) -> dict:
    """``cases`` hypothesis examples over (seed file, mutation chain); raises on the first failure (shrunk)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    seeds = all_seeds()
    names = sorted(seeds)
    intact = seeds["synthetic-native"]
    counts: dict[str, int] = {}
    slowest = [0.0]
    mutation = st.tuples(st.sampled_from(OPS), st.integers(0, 2**31), st.integers(0, 2**31), st.integers(0, 255))

    @hypothesis_seed(seed)
    @settings(max_examples=cases, deadline=None, database=None, derandomize=False, print_blob=True, report_multiple_bugs=False,
              suppress_health_check=list(HealthCheck))
    @given(name=st.sampled_from(names), chain=st.lists(mutation, min_size=1, max_size=3),
           nest=st.one_of(st.none(), st.tuples(st.integers(1, 3000), st.booleans())), pair=st.booleans())
    def case(name: str, chain: list, nest: tuple | None, pair: bool) -> None:
        data = nested_sequences(*nest) if nest is not None else seeds[name]
        for op, a, b, c in chain:
            data = mutate(data, op, a, b, c)
        with tempfile.TemporaryDirectory() as folder:
            try:
                result = isolated_case(data, Path(folder), max_mb, intact if pair else None)
            except AssertionError:
                if crash_dir is not None:
                    crash_dir.mkdir(parents=True, exist_ok=True)
                    (crash_dir / f"crash-{name}-{len(data)}.dcm").write_bytes(data)
                raise
        key = "ok" if result["status"] == "ok" else result["status"].split("(")[0][10:50].strip()
        counts[key] = counts.get(key, 0) + 1
        slowest[0] = max(slowest[0], result["seconds"])

    start = time.perf_counter()
    case()
    return {"engine": "hypothesis", "cases": sum(counts.values()), "seeds": len(names),
            "seconds": round(time.perf_counter() - start, 1), "slowest_case_s": round(slowest[0], 3),
            "peak_rss_mb": round(peak_rss_mb()), "outcomes": dict(sorted(counts.items(), key=lambda kv: -kv[1]))}


def run_atheris(seconds: int, max_mb: float) -> None:  # pragma: no cover - by command only
    """Coverage-guided fuzzing with atheris (libFuzzer) from the same seeds (written as its corpus)."""
    import atheris

    with atheris.instrument_imports():
        import mvcm_core.data.dicom  # noqa: F401
        import mvcm_core.data.study  # noqa: F401
    corpus = Path(tempfile.mkdtemp(prefix="mvcm-fuzz-corpus-"))
    for name, data in all_seeds().items():
        (corpus / name).write_bytes(data)
    work = Path(tempfile.mkdtemp(prefix="mvcm-fuzz-"))

    def one(data: bytes) -> None:  # in-process: libFuzzer needs the coverage and catches aborts itself
        check_case(data, work, max_mb)

    atheris.Setup([sys.argv[0], f"-max_total_time={seconds}", f"-rss_limit_mb={int(max_mb) + 1024}",
                   str(corpus)], one)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    """Parse flags, fuzz, print a JSON summary; 1 if a case failed."""
    parser = argparse.ArgumentParser(description="Fuzz DICOM ingestion (read_dicom + study grouping).")
    parser.add_argument("--engine", choices=["hypothesis", "atheris"], default="hypothesis")
    parser.add_argument("--cases", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=int, default=600, help="atheris: total time")
    parser.add_argument("--max-mb", type=float, default=768.0, help="bound on peak-RSS growth per case")
    parser.add_argument("--crash-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    limit = int((peak_rss_mb() + args.max_mb + 2048) * 1024**2)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))  # a runaway case fails, the machine survives
    if args.engine == "atheris":
        run_atheris(args.seconds, args.max_mb)
        return 0
    try:
        summary = run_hypothesis(args.cases, args.seed, args.max_mb, args.crash_dir)
    except Exception as exc:  # noqa: BLE001 - hypothesis re-raises the shrunk failure
        print(json.dumps({"engine": "hypothesis", "failure": f"{type(exc).__name__}: {exc}"[:600]}))
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
