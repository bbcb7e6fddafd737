"""Print per-dataset counts: ``python -m mvcm_core.data.readers NAME ROOT [--split S]``.

Open-I needs parsed reports, so it is not available from this command line.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from ._common import ReaderError, ReaderWarning
from .registry import READERS, describe


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 ok, 2 unreadable dataset)."""
    parser = argparse.ArgumentParser(prog="python -m mvcm_core.data.readers", description=__doc__)
    parser.add_argument("name", choices=[n for n in READERS if n != "openi-images"])
    parser.add_argument("root", help="dataset root folder in its native layout")
    parser.add_argument("--split", choices=["train", "val", "test"], default=None)
    parser.add_argument("--no-image-check", action="store_true", help="do not stat every image file")
    args = parser.parse_args(argv)
    options = {"check_images": False} if args.no_image_check and args.name != "mvcm-qa" else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ReaderWarning)  # the summary below already has the counts
            print(describe(args.name, args.root, args.split, **options))
    except ReaderError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
