"""``mvcm index REPORTS.jsonl --out DIR [--checkpoint C]``: build a retrieval index from your own reports.

Each JSON line needs ``text`` and ``report_uid``; ``findings`` (list of dicts), ``attribution`` and
``study_id`` are kept if present. Point the app or ``mvcm retrieve`` at it by placing it in a
checkpoint folder as ``index/`` (or load it with :meth:`mvcm_core.index.ReportIndex.load`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``index``."""
    parser = subparsers.add_parser("index", help="build a retrieval index from your own reports",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", help="JSON-lines file of reports")
    parser.add_argument("--out", required=True, help="index folder to write")
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder or Hub id (default: the shipped one)")
    parser.add_argument("--backend", choices=("auto", "exact", "faiss"), default="auto")
    parser.set_defaults(func=run)
    return parser


def read_reports(path: Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file, with one-line errors naming the bad line."""
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise ValueError(f"{path.name} line {number}: not valid JSON") from None
        if not isinstance(record, dict) or not str(record.get("text", "")).strip() or "report_uid" not in record:
            raise ValueError(f"{path.name} line {number}: needs a non-empty 'text' and a 'report_uid'")
        record.setdefault("findings", [])
        record.setdefault("attribution", "")
        records.append(record)
    return records


def run(args: argparse.Namespace) -> int:
    """Embed and index the reports, then save the index."""
    from mvcm_core.inference import Predictor, build_report_index, default_checkpoint

    try:
        records = read_reports(Path(args.reports))
        predictor = Predictor.from_pretrained(args.checkpoint or default_checkpoint())
        index = build_report_index(predictor, records, backend=args.backend)
        index.save(args.out)
    except (OSError, ValueError) as exc:
        print(f"mvcm: error: {exc}", file=sys.stderr)
        return 2
    print(f"indexed {len(index)} reports -> {args.out}")
    return 0
