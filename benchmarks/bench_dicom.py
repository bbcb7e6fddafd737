"""DICOM ingest benchmark: decode + window + resize to 512 px, against plain pydicom on the same file.

Run: ``python -m benchmarks.bench_dicom [--repeats 7] [--size 512] [--json]``. Needs ``pydicom-data``
(installed by the ``dev`` extra) for the real RG1 chest PA in its four encodings. Prints medians;
never asserts on time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from mvcm_core.data.dicom import read_dicom
from mvcm_core.data.imageops import resize_longest


def corpus_dir() -> Path:
    """Folder of the pydicom-data files."""
    import data_store  # the import name of the pydicom-data package

    return Path(data_store.__file__).parent / "data"


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` in milliseconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def ours(path: Path, size: int) -> np.ndarray:
    """MVCM ingest: validate, decode, modality LUT, VOI window, MONOCHROME1, resize."""
    return resize_longest(read_dicom(path).display, size)


def baseline(path: Path, size: int) -> np.ndarray:
    """Plain pydicom decode + PIL resize (no validation, no windowing, no polarity)."""
    pixels = pydicom.dcmread(path).pixel_array.astype(np.float32)
    rows, cols = pixels.shape
    scale = size / max(rows, cols)
    return np.asarray(Image.fromarray(pixels, mode="F").resize((round(cols * scale), round(rows * scale))))


def main(argv: Sequence[str] | None = None) -> int:
    """Print a table of median times per RG1 encoding."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    for name in ("RG1_UNCR", "RG1_UNCI", "RG1_J2KR", "RG1_J2KI"):
        path = corpus_dir() / f"{name}.dcm"
        ours_ms = median_ms(lambda: ours(path, args.size), args.repeats)
        base_ms = median_ms(lambda: baseline(path, args.size), args.repeats)
        rows.append({"file": name, "mvcm_ms": round(ours_ms, 1), "pydicom_pil_ms": round(base_ms, 1),
                     "ratio": round(ours_ms / base_ms, 2)})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"decode + window + resize to {args.size} px, median of {args.repeats} (1955×1841 CR, MONOCHROME1)")
        print(f"{'file':<10} {'mvcm ms':>9} {'pydicom+PIL ms':>15} {'ratio':>6}")
        for row in rows:
            print(f"{row['file']:<10} {row['mvcm_ms']:>9} {row['pydicom_pil_ms']:>15} {row['ratio']:>6}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
