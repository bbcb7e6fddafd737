"""``mvcm inspect PATH... [--json]``: what each file is, which study and view it belongs to, and
whether it is usable. Prints only technical, PHI-free fields (study and series as opaque keys)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mvcm_core.data.dicom import Limits
from mvcm_core.data.dicom_pixels import silence_native_stderr
from mvcm_core.data.study import FileRecord, group_studies, scan_paths, study_key_of


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``inspect`` subcommand."""
    parser = subparsers.add_parser("inspect", help="list the studies, views and problems of DICOM files / folders",
                                   description=__doc__)
    parser.add_argument("paths", nargs="+", help="files or folders (searched recursively, DICOMDIR-aware)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument("--max-pixels", type=int, default=Limits().max_pixels,
                        help="refuse images with more pixels than this (default: %(default)s)")
    parser.set_defaults(func=run)
    return parser


def display_path(path: Path, roots: list[Path]) -> str:
    """The path relative to the folder the user named (or as given, for files named directly)."""
    for root in roots:
        if root.is_dir() and path.is_relative_to(root):
            return str(path.relative_to(root))
    return str(path)


def file_summary(record: FileRecord, study_number: dict[str, int], roots: list[Path]) -> dict[str, Any]:
    """One PHI-free record per file."""
    meta = record.meta
    summary: dict[str, Any] = {"file": display_path(record.path, roots), "kind": record.kind,
                               "status": record.status}
    if meta is None:
        return summary
    summary.update(
        study=study_key_of(record) if record.ok else meta.study_key,
        study_number=study_number.get(study_key_of(record)) if record.ok else None,
        series=meta.series_key,
        series_number=meta.series_number,
        instance_number=meta.instance_number,
        view=meta.view,
        view_source=meta.view_source,
        sop_class=meta.sop_class,
        modality=meta.modality,
        rows=meta.rows,
        columns=meta.columns,
        bits_stored=meta.bits_stored,
        photometric=meta.photometric,
        transfer_syntax=meta.transfer_syntax,
        warnings=list(meta.warnings),
    )
    return summary


def _table_line(item: dict[str, Any]) -> str:
    if "view" not in item:
        return f"  {item['file']}  {item['status']}"
    return (f"  {item['file']}  series {item['series_number'] if item['series_number'] is not None else '-'}"
            f"  {item['view']:<8} {item['modality'] or '-':<3} {item['rows']}×{item['columns']}"
            f"  {item['bits_stored']} bit  {item['photometric']}  {item['transfer_syntax']}  {item['status']}")


def run(args: argparse.Namespace) -> int:
    """Inspect the paths; exit code 0 if at least one file is usable, 1 otherwise."""
    with silence_native_stderr():  # C decoders print to fd 2; the reasons are in the records
        records = scan_paths(args.paths, Limits(max_pixels=args.max_pixels))
    studies = group_studies(records)
    study_number = {study.key: i + 1 for i, study in enumerate(studies)}
    roots = [Path(p) for p in args.paths]
    summaries = [file_summary(r, study_number, roots) for r in records]
    if args.json:
        document = {
            "studies": [{"study": s.key, "number": study_number[s.key],
                         "views": [v.label for v in s.views]} for s in studies],
            "files": summaries,
        }
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for study in studies:
            views = ", ".join(v.label for v in study.views)
            print(f"study {study_number[study.key]} ({study.key}): {len(study.views)} view(s): {views}")
            for item in summaries:
                if item.get("study") == study.key and item["status"] == "ok":
                    print(_table_line(item))
        rejected = [item for item in summaries if item["status"] != "ok"]
        if rejected:
            print(f"rejected: {len(rejected)} file(s)")
            for item in rejected:
                print(f"  {item['file']}  {item['status']}")
        if not records:
            print("no files found")
    return 0 if any(r.ok for r in records) else 1
