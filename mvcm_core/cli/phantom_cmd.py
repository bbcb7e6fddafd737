"""``mvcm phantom --studies N --out DIR [--seed S] [--size 256] [--source auto|openi|random]``: render
simulated two-view chest studies (PA + left lateral DICOM, PNG previews, report, findings) from the
3-D thorax phantom. ``auto`` uses the cached Open-I reports when available, else random findings."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``phantom`` subcommand."""
    parser = subparsers.add_parser("phantom", help="render simulated PA + lateral chest studies from a 3-D phantom",
                                   description=__doc__)
    parser.add_argument("--studies", type=int, required=True, help="number of studies to render")
    parser.add_argument("--out", required=True, help="output folder (one sub-folder per study)")
    parser.add_argument("--seed", type=int, default=0, help="seed of study choice and rendering (default: %(default)s)")
    parser.add_argument("--size", type=int, default=256, help="detector pixels per side (default: %(default)s)")
    parser.add_argument("--source", choices=("auto", "openi", "random"), default="auto",
                        help="findings and report text: Open-I reports or random (default: %(default)s)")
    parser.add_argument("--cache-dir", default=None, help="Open-I cache root (default: $MVCM_CACHE_DIR or ~/.cache/mvcm)")
    parser.add_argument("--sop-class", choices=("DX", "CR"), default="DX", help="DICOM IOD (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default: %(default)s)")
    parser.add_argument("--pool", type=int, default=64, help="distinct base anatomies (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def _specs(args: argparse.Namespace):
    from mvcm_core.data.phantom.dataset import openi_specs, random_specs

    if args.source in ("auto", "openi"):
        try:
            return openi_specs(args.studies, args.seed, args.cache_dir), "openi"
        except Exception as err:  # noqa: BLE001 - any failure of the optional corpus falls back (auto) or reports
            if args.source == "openi":
                raise RuntimeError(f"Open-I reports unavailable: {err}") from err
            print(f"mvcm phantom: Open-I reports unavailable ({err}); using random findings", file=sys.stderr)
    return random_specs(args.studies, args.seed), "random"


def run(args: argparse.Namespace) -> int:
    """Render the studies; exit code 1 with a one-line reason on bad input."""
    if args.studies < 1:
        print("mvcm phantom: --studies must be at least 1", file=sys.stderr)
        return 1
    if not 32 <= args.size <= 2048:
        print("mvcm phantom: --size must be between 32 and 2048", file=sys.stderr)
        return 1
    try:
        specs, source = _specs(args)
    except RuntimeError as err:
        print(f"mvcm phantom: {err}", file=sys.stderr)
        return 1
    from mvcm_core.data.phantom.dataset import render_dataset

    start = time.perf_counter()
    ids = render_dataset(specs, args.out, size=args.size, sop_class=args.sop_class, workers=args.workers,
                         pool=args.pool, progress=not args.quiet)
    elapsed = time.perf_counter() - start
    print(f"wrote {len(ids)} two-view studies ({source} findings, {args.size} px) to {args.out} "
          f"in {elapsed:.1f} s ({len(ids) / max(elapsed, 1e-9):.1f} studies/s)")
    return 0
