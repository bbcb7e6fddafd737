"""Build the simulated multi-view dataset: real Open-I reports rendered as PA + lateral phantom studies.

``python -m training.build_data --out DATA [--size 128] [--renders 2] [--limit N] [--source openi|random]``;
``python -m training.build_data --out DATA --refresh-questions`` regenerates the questions only.

For every report (train split: ``--renders`` renders with different seeds / patients; val and test:
one), the phantom renders a PA and a left-lateral radiograph carrying the report's structured
findings. Each view goes through the serving path's preprocessing (12-bit stored values → the file's
full-range window → :func:`~mvcm_core.data.transforms.view_to_input`), so the model trains on exactly
what it will be served. Writes the layout of :mod:`mvcm_core.data.study_store` plus ``qa.json``
(SLAKE-style, answer vocabulary from train only), ``retrieval.json`` (study ↔ report pairs per split,
duplicate texts sharing a ``group_id``) and a data card; ``--dicom N`` also writes N studies
per split as DICOM + PNG for inspection.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mvcm_core.data.findings import CANONICAL_TERMS, Finding
from mvcm_core.data.phantom.visibility import min_image_size, resolved_at
from mvcm_core.data.retrieval_pairs import label_vector, normalise_report_text
from mvcm_core.data.study_store import write_rows
from mvcm_core.data.transforms import view_to_input
from mvcm_core.data.vqa_gen import build_answer_vocab, generate_vqa, out_of_vocab, write_qa_json

STORED_MAX = 4095.0  # 12-bit phantom output; the DICOM window (2048, 4096) maps it to [0, 1] exactly
DICOM_WINDOW = (2048.0, 4096.0)
VIEW_LABELS = {"PA": "PA", "LL": "LATERAL"}


@dataclass
class ReportSource:
    """One report to render: identity, split, text and findings (a ``StudyLike`` for VQA)."""

    uid: str
    split: str
    text: str
    findings: list[Finding]
    fully_mapped: bool = True
    study_id: str = ""
    render_seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    depths: list[dict[str, Any]] = field(default_factory=list)  # rendered lesions, front to back


def study_seed(seed: int, uid: str, render: int) -> int:
    """Deterministic 31-bit render seed of one (report, render)."""
    digest = hashlib.blake2b(f"{seed}:{uid}:{render}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def openi_sources(limit: int | None) -> tuple[list[ReportSource], dict[str, Any]]:
    """Open-I reports (fetched into the cache if needed) and their provenance."""
    from mvcm_core.data.openi import OPENI_ATTRIBUTION, ensure_openi_archive, load_openi_corpus
    from mvcm_core.data.retrieval_pairs import report_text

    archive = ensure_openi_archive()
    reports = sorted(load_openi_corpus(), key=lambda r: (r.split, r.uid))
    if limit:  # keep the split mix: the first `limit` of each split, proportionally
        by_split = {s: [r for r in reports if r.split == s] for s in ("train", "val", "test")}
        total = len(reports)
        reports = [r for s, rs in by_split.items() for r in rs[:max(2, round(limit * len(rs) / total))]]
    sources = [ReportSource(r.uid, r.split, report_text(r), list(r.findings), r.fully_mapped) for r in reports]
    provenance = {"reports": "Open-I (Indiana University chest X-ray collection) NLMCXR_reports.tgz",
                  "archive_sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
                  "licence": "CC BY-NC-ND 4.0", "attribution": OPENI_ATTRIBUTION,
                  "splits": "R2Gen standard split (train 2,069 / val 296 / test 590 studies); others → train"}
    return sources, provenance


def random_sources(count: int, seed: int) -> tuple[list[ReportSource], dict[str, Any]]:
    """Random structured findings with templated report text (offline fallback, tests)."""
    from mvcm_core.data.phantom.sampler import report_text, sample_findings

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5A4]))
    sources = []
    for i in range(count):
        split = "train" if i % 10 < 7 else ("val" if i % 10 < 8 else "test")
        findings = sample_findings(rng)
        findings_text, impression = report_text(findings)
        sources.append(ReportSource(f"RND{i:05d}", split, f"{findings_text} {impression}", findings))
    return sources, {"reports": "random structured findings with templated text (no real reports)"}


def study_inputs(study: dict[str, Any], size: int) -> np.ndarray:
    """``[2, size, size]`` uint8 model inputs (PA, LL) of one ``render_study`` output."""
    return np.stack([view_to_input(study[v]["stored"].astype(np.float32) / STORED_MAX, size) for v in ("PA", "LL")])


def _render_one(job: tuple[int, list[dict[str, Any]], int, int, int]) -> tuple[int, np.ndarray, dict[str, Any]]:
    """Worker: render one study and convert both views to model inputs."""
    from mvcm_core.data.phantom.render import render_study

    row, findings, seed, size, anatomies = job
    study = render_study([Finding.from_dict(f) for f in findings], seed=seed, size=max(size, 128), pool=anatomies)
    meta = study["meta"]
    return row, study_inputs(study, size), {"visibility": meta["visibility"], "anatomy_id": meta["anatomy_id"],
                                            "depths": meta["depths"]}


def render_all(sources: list[ReportSource], size: int, workers: int, anatomies: int = 64
               ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Render every source (ordered by anatomy so each worker reuses its cached base)."""
    images = np.zeros((len(sources), 2, size, size), dtype=np.uint8)
    extras: list[dict[str, Any]] = [{} for _ in sources]
    jobs = sorted(((i, [f.to_dict() for f in s.findings], s.render_seed, size, anatomies)
                   for i, s in enumerate(sources)), key=lambda job: (job[2] % anatomies, job[0]))
    progress = tqdm(total=len(jobs), desc=f"render {size}px", unit="study")
    if workers <= 1:
        results = map(_render_one, jobs)
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_render_one, jobs, chunksize=16)
    for row, views, extra in results:
        images[row], extras[row] = views, extra
        progress.update(1)
    progress.close()
    if workers > 1:
        pool.shutdown()
    return images, extras


def expand_renders(reports: list[ReportSource], renders: int, seed: int) -> list[ReportSource]:
    """One source per (report, render); train reports get ``renders`` renders, others one."""
    out = []
    for report in reports:
        for k in range(renders if report.split == "train" else 1):
            out.append(ReportSource(report.uid, report.split, report.text, report.findings, report.fully_mapped,
                                    study_id=f"{report.uid}-r{k}", render_seed=study_seed(seed, report.uid, k)))
    return out


def build_dataset(out: str | Path, *, size: int = 128, source: str = "openi", limit: int | None = None,
                  renders: int = 2, seed: int = 0, workers: int = 2, dicom: int = 0, anatomies: int = 64) -> Path:
    """Build the dataset folder and return it (see the module docstring)."""
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    reports, provenance = openi_sources(limit) if source == "openi" else random_sources(limit or 64, seed)
    sources = expand_renders(reports, renders, seed)
    images, extras = render_all(sources, size, workers, anatomies)
    groups: dict[str, int] = {}
    rows = []
    for s, extra in zip(sources, extras):
        s.depths = extra.get("depths", [])
        group = groups.setdefault(normalise_report_text(s.text), len(groups))
        rows.append({"study_id": s.study_id, "report_uid": s.uid, "split": s.split, "views": ["PA", "LATERAL"],
                     "text": s.text, "findings": [f.to_dict() for f in s.findings],
                     "labels": label_vector(s.findings).tolist(), "group_id": group, "render_seed": s.render_seed,
                     "fully_mapped": s.fully_mapped, **extra})
    np.save(out / f"images_{size}.npy", images)
    write_rows(out / "studies.jsonl", rows)
    retrieval = {split: [{"study_id": r["study_id"], "report_uid": r["report_uid"], "group_id": r["group_id"],
                          "labels": r["labels"]} for r in rows if r["split"] == split] for split in ("train", "val", "test")}
    (out / "retrieval.json").write_text(json.dumps(retrieval))
    qa, vocab = write_questions(out, sources, seed, size)
    if dicom:
        write_dicom_examples(out / "studies", sources, dicom, size, anatomies)
    card = {"provenance": provenance, "size": size, "renders_per_train_report": renders, "seed": seed,
            "anatomies": anatomies,
            "counts": {split: sum(r["split"] == split for r in rows) for split in ("train", "val", "test")},
            "questions": {split: sum(q["split"] == split for q in qa) for split in ("train", "val", "test")},
            "distinct_report_texts": {split: len({r["group_id"] for r in rows if r["split"] == split})
                                      for split in ("train", "val", "test")},
            "answer_vocab_size": len(vocab), "out_of_vocab": out_of_vocab(qa, vocab),
            "unresolved_at_size": {t: min_image_size(t) for t in CANONICAL_TERMS if not resolved_at(t, size)},
            "preprocessing": "12-bit stored / 4095 (DICOM window 2048/4096) -> view_to_input",
            "seconds": round(time.perf_counter() - started, 1)}
    (out / "data_card.json").write_text(json.dumps(card, indent=2))
    return out


def write_questions(out: Path, sources: list[ReportSource], seed: int, size: int
                    ) -> tuple[list[dict[str, Any]], list[str]]:
    """Write ``qa.json`` and the train-split answer vocabulary of these sources; return both."""
    qa = generate_vqa(sources, seed=seed, image_size=size)
    write_qa_json(qa, out / "qa.json")
    vocab = build_answer_vocab([r for r in qa if r["split"] == "train"])
    (out / "answer_vocab.json").write_text(json.dumps(vocab, indent=1))
    return qa, vocab


def refresh_questions(folder: str | Path) -> dict[str, int]:
    """Regenerate the questions of a built dataset without rendering it again; returns questions per split.

    Lesion depths missing from ``studies.jsonl`` (folders built before they were recorded) are
    recomputed with :func:`~mvcm_core.data.phantom.render.plan_study`, which makes the placements the
    render made, and written back.
    """
    from mvcm_core.data.phantom.render import lesion_depths, plan_study

    folder = Path(folder)
    card = json.loads((folder / "data_card.json").read_text())
    rows = [json.loads(line) for line in (folder / "studies.jsonl").read_text().splitlines() if line.strip()]
    missing = sorted((r for r in rows if "depths" not in r), key=lambda r: r["render_seed"] % card["anatomies"])
    for row in tqdm(missing, desc="placements", unit="study"):
        anat, plan = plan_study([Finding.from_dict(f) for f in row["findings"]], row["render_seed"],
                                pool=card["anatomies"])
        row["depths"] = lesion_depths(plan.records, anat)
    sources = [ReportSource(r["report_uid"], r["split"], r["text"], [Finding.from_dict(f) for f in r["findings"]],
                            r["fully_mapped"], study_id=r["study_id"], render_seed=r["render_seed"],
                            depths=r["depths"]) for r in rows]
    qa, vocab = write_questions(folder, sources, card["seed"], card["size"])
    write_rows(folder / "studies.jsonl", rows)
    card["questions"] = {split: sum(q["split"] == split for q in qa) for split in ("train", "val", "test")}
    card.update(answer_vocab_size=len(vocab), out_of_vocab=out_of_vocab(qa, vocab))
    (folder / "data_card.json").write_text(json.dumps(card, indent=2))
    return card["questions"]


def write_dicom_examples(folder: Path, sources: list[ReportSource], per_split: int, size: int,
                         anatomies: int) -> None:
    """Write the first ``per_split`` studies of each split as DICOM + PNG + report + findings."""
    from mvcm_core.data.phantom.dataset import StudySpec, write_study

    for split in ("train", "val", "test"):
        for s in [s for s in sources if s.split == split][:per_split]:
            spec = StudySpec(s.study_id, s.render_seed, s.findings, s.text, "", f"report:{s.uid}", s.split)
            write_study(folder, spec, size=max(size, 128), pool=anatomies)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (``python -m training.build_data``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--refresh-questions", action="store_true",
                        help="regenerate qa.json of the existing dataset in --out without rendering")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--source", choices=("openi", "random"), default="openi")
    parser.add_argument("--limit", type=int, help="use about this many reports (keeps the split mix)")
    parser.add_argument("--renders", type=int, default=2, help="renders per training report")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dicom", type=int, default=0, help="also write this many studies per split as DICOM")
    parser.add_argument("--anatomies", type=int, default=64, help="distinct phantom patients (base anatomies)")
    args = parser.parse_args(argv)
    if args.refresh_questions:
        print(json.dumps(refresh_questions(args.out)))
        return 0
    out = build_dataset(args.out, size=args.size, source=args.source, limit=args.limit, renders=args.renders,
                        seed=args.seed, workers=args.workers, dicom=args.dicom, anatomies=args.anatomies)
    print(json.dumps(json.loads((out / "data_card.json").read_text())["counts"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
