"""Teaching mode: shipped example studies and "reveal the reference report".

Examples are the folders ``assets/studies/<id>/`` holding ``PA.dcm``, ``LL.dcm``, ``report.txt``
and ``findings.json``. An upload *is* an example when its accepted files have exactly the bytes
(sha256) of an example's DICOMs, so the reveal works whether the example was clicked or uploaded.

Comparison (documented choice): for every canonical term of the reference findings, plus a fixed
set of common findings the reference does *not* list, the model is asked the training-style
presence question ("Is there a pleural effusion?"). Expected answer: ``yes`` when the reference
lists the term, ``no`` otherwise ("Is this study normal?" for a normal reference). A finding is
*right* when the model's answer equals the expected one. The model is not asked about anything
else; the reference findings come from the report's MeSH coding, which is itself imperfect.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from demo.ask import NOT_A_DIAGNOSIS, answer_question, presence_question
from demo.session import Session
from mvcm_core.data.vqa_phrases import TERM_PHRASES
from mvcm_core.folders import sha256_file

EXAMPLES_ROOT = Path(__file__).resolve().parents[1] / "assets" / "studies"
EXAMPLE_FILES = ("PA.dcm", "LL.dcm")
COMMON_PROBES = ("pleural effusion", "cardiomegaly", "pneumothorax", "opacity", "edema")
Progress = Callable[..., Any]


@dataclass(frozen=True)
class ExampleStudy:
    """One shipped example study."""

    name: str
    files: tuple[str, ...]
    report: str
    findings: tuple[dict[str, Any], ...]
    digests: frozenset[str]


def find_examples(root: str | Path | None = None) -> list[ExampleStudy]:
    """Example studies under ``root`` (default ``assets/studies``); incomplete folders are skipped."""
    root = Path(root) if root is not None else EXAMPLES_ROOT
    examples = []
    for folder in sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []:
        files = [folder / name for name in EXAMPLE_FILES]
        if not all(f.is_file() for f in files):
            continue
        report = (folder / "report.txt").read_text() if (folder / "report.txt").is_file() else ""
        findings: list[dict[str, Any]] = []
        if (folder / "findings.json").is_file():
            findings = list(json.loads((folder / "findings.json").read_text()).get("findings", []))
        examples.append(
            ExampleStudy(
                folder.name,
                tuple(str(f) for f in files),
                report,
                tuple(findings),
                frozenset(sha256_file(f) for f in files),
            )
        )
    return examples


def example_matcher(examples: Sequence[ExampleStudy]) -> Callable[[Sequence[Path]], str | None]:
    """A function: accepted upload paths → the example whose DICOM bytes they are, else None."""
    by_digests = {example.digests: example.name for example in examples}

    def match(paths: Sequence[Path]) -> str | None:
        if not by_digests or len(paths) > max(len(d) for d in by_digests):
            return None
        return by_digests.get(frozenset(sha256_file(p) for p in paths))

    return match


def reference_terms(findings: Sequence[dict[str, Any]]) -> list[str]:
    """Canonical terms of the reference findings that have a presence question, in report order."""
    terms: list[str] = []
    for finding in findings:
        term = finding.get("term", "")
        if (term in TERM_PHRASES or term == "normal") and term not in terms:
            terms.append(term)
    return terms


def probes(findings: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """(term, expected answer) pairs: every reference term (yes) and absent common findings (no)."""
    present = reference_terms(findings) or ["normal"]
    pairs = [(term, "yes") for term in present]
    pairs += [(term, "no") for term in COMMON_PROBES if term not in present]
    return pairs


def compare(
    session: Session,
    predictor: Any,
    findings: Sequence[dict[str, Any]],
    progress: Progress | None = None,
    session_hash: str | None = None,
) -> list[dict[str, Any]]:
    """Ask each probe question; rows of term, question, expected, model answer, probability, right."""
    rows = []
    pairs = probes(findings)
    for number, (term, expected) in enumerate(pairs, start=1):
        question = presence_question(term)
        if progress is not None:
            progress(number / len(pairs), desc=question)
        answer = answer_question(session, predictor, question, 3, session_hash)
        rows.append(
            {
                "term": term,
                "question": question,
                "expected": expected,
                "model": answer["answer"],
                "probability": answer["probability"],
                "right": answer["answer"] == expected,
            }
        )
    return rows


def highlights(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """``gr.HighlightedText`` value: one entry per probe, labelled ``right`` or ``wrong``."""
    out: list[tuple[str, str | None]] = []
    for row in rows:
        truth = "in the report" if row["expected"] == "yes" else "not in the report"
        text = f"{row['term']} ({truth}; model: {row['model']} {row['probability']:.0%})"
        out.append((text, "right" if row["right"] else "wrong"))
        out.append(("  ", None))
    return out[:-1]


def reveal(
    session: Session,
    predictor: Any,
    examples: Sequence[ExampleStudy],
    progress: Progress | None = None,
    session_hash: str | None = None,
) -> tuple[str, list[tuple[str, str | None]]]:
    """The reference report of a shipped example and the right / wrong findings of the model.

    Raises:
        ValueError: the loaded study is not a shipped example.
    """
    example = next((e for e in examples if e.name == session.example), None)
    if example is None:
        raise ValueError("The reference report is available for the shipped example studies only.")
    terms = reference_terms(example.findings) or ["normal"]
    text = [
        f"### Reference report: {example.name}",
        example.report.strip().replace("\n", "\n\n"),
        "**Reference findings:** " + ", ".join(terms),
    ]
    if predictor is None:
        return "\n\n".join(text + ["_No model loaded: nothing to compare._"]), []
    rows = compare(session, predictor, example.findings, progress, session_hash)
    right = sum(r["right"] for r in rows)
    text.append(
        f"**The model got {right} of {len(rows)} presence questions right** "
        "(green = right, red = wrong). " + f"_{NOT_A_DIAGNOSIS}_"
    )
    return "\n\n".join(text), highlights(rows)
