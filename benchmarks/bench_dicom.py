"""DICOM ingest benchmark: decode + window + resize, against plain pydicom + PIL on the same file.

Run: ``python -m benchmarks.bench_dicom [--repeats 9] [--sizes 128 512] [--quick] [--json]``. Needs
``pydicom-data`` (installed by the ``dev`` extra) for the real RG1 chest PA (1955×1841, MONOCHROME1)
uncompressed (UNCR, UNCI) and JPEG 2000 compressed (J2KR lossless, J2KI lossy). Sizes: 128 px is the
model input, 512 px a display image. Prints median and p95 after warm-up; never asserts on time.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from benchmarks.common import emit, summary, timings_ms
from mvcm_core.data.dicom import read_dicom
from mvcm_core.data.imageops import resize_longest


def corpus_dir() -> Path:
    """Folder of the pydicom-data files."""
    import data_store  # the import name of the pydicom-data package

    return Path(data_store.__file__).parent / "data"


def timed_pair(first: Callable[[], object], second: Callable[[], object], repeats: int
               ) -> tuple[dict[str, float], dict[str, float]]:
    """Median and p95 ms of two functions after one warm-up call each, their calls interleaved.

    Interleaving puts both under the same conditions (page cache, allocator state, a neighbour's load);
    run back to back, the second function's figures moved by up to 50% between runs of the benchmark.
    """
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, bucket in ((first, times[0]), (second, times[1])):
            bucket.extend(timings_ms(fn, 1, warmup=0 if bucket else 1))
    return summary(times[0]), summary(times[1])


def ours(path: Path, size: int) -> np.ndarray:
    """MVCM ingest as the predictor does it: validate, decode, modality LUT, resize, VOI window, MONOCHROME1."""
    return resize_longest(read_dicom(path, max_side=size).display, size)


def baseline(path: Path, size: int) -> np.ndarray:
    """Plain pydicom decode + PIL resize (no validation, no windowing, no polarity)."""
    pixels = pydicom.dcmread(path).pixel_array.astype(np.float32)
    rows, cols = pixels.shape
    scale = size / max(rows, cols)
    return np.asarray(Image.fromarray(pixels, mode="F").resize((round(cols * scale), round(rows * scale))))


RG1_FILES = ("RG1_UNCR", "RG1_UNCI", "RG1_J2KR", "RG1_J2KI")


def run(sizes: Sequence[int], repeats: int) -> dict:
    """Rows (file, size, ours, baseline, ratio) for every RG1 encoding and output size."""
    rows = []
    for name in RG1_FILES:
        path = corpus_dir() / f"{name}.dcm"
        for size in sizes:
            mine, base = timed_pair(lambda: ours(path, size), lambda: baseline(path, size), repeats)  # noqa: B023
            rows.append({"file": name, "size": size, "mvcm_median_ms": mine["median_ms"],
                         "mvcm_p95_ms": mine["p95_ms"], "pydicom_pil_median_ms": base["median_ms"],
                         "pydicom_pil_p95_ms": base["p95_ms"],
                         "ratio": round(mine["median_ms"] / base["median_ms"], 2)})
    return {"repeats": repeats, "rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    """Print a table of median / p95 times per RG1 encoding and size."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--quick", action="store_true", help="3 repeats, 128 px only")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run([128] if args.quick else args.sizes, 3 if args.quick else args.repeats)
    lines = [f"decode + window + resize, median / p95 of {result['repeats']} (RG1 1955×1841 CR, MONOCHROME1)",
             f"{'file':<10} {'px':>4} {'mvcm ms':>9} {'p95':>7} {'pydicom+PIL ms':>15} {'p95':>7} {'ratio':>6}"]
    for row in result["rows"]:
        lines.append(f"{row['file']:<10} {row['size']:>4} {row['mvcm_median_ms']:>9.1f} {row['mvcm_p95_ms']:>7.1f} "
                     f"{row['pydicom_pil_median_ms']:>15.1f} {row['pydicom_pil_p95_ms']:>7.1f} {row['ratio']:>6}")
    emit(result, args.json, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
