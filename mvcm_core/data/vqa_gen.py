"""Generate VQA records (SLAKE / VQA-RAD style) from the structured findings of studies.

Question types (``content_type``): ``presence`` (yes/no, balanced per finding within a split),
``laterality``, ``location``, ``severity``, ``normality`` ("is this study normal?"), ``abnormality``
("what abnormality is present?", the most salient finding), ``view`` (questions only one view
answers), ``depth`` (is an opacity, nodule or mass anterior or posterior in its lung: asked from
where the phantom placed it, which a projection does not keep) and ``localisation`` (which lung and
which half, front or back: the two-view localisation of a lesion). Every record names the view its
answer needs (``required_view``): left/right needs the frontal view; depth, small effusions, the
posterior costophrenic recess and retrocardiac findings need the lateral; localisation needs
``both``. Output is deterministic for a given seed and input.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from mvcm_core.data.findings import Finding
from mvcm_core.data.phantom.visibility import resolved_at
from mvcm_core.data.vqa_phrases import (
    CLOSED_ANSWERS,
    DEPTH_MARGIN,
    LATERAL_ZONES,
    NO_SIDE_TERMS,
    SALIENCE,
    SMALL,
    TEMPLATES,
    TERM_PHRASES,
    VERTICAL_LEVEL,
    ZONE_PHRASES,
)

QUESTION_TYPES = ("presence", "laterality", "location", "severity", "normality", "abnormality", "view", "depth",
                  "localisation")


class StudyLike(Protocol):
    """What the generator reads from a study (an :class:`~mvcm_core.data.openi.OpenIReport` fits)."""

    study_id: str
    split: str
    findings: list[Finding]

    @property
    def fully_mapped(self) -> bool: ...


def required_view(finding: Finding | None, content_type: str, answer: str = "") -> str:
    """The view an answer needs: ``frontal`` (left/right), ``lateral`` (posterior, small fluid) or ``any``."""
    if content_type == "laterality" or answer.split(" ")[0] in ("left", "right", "bilateral"):
        return "frontal"
    if content_type == "view":
        return "lateral"
    if finding is not None and answer != "no":
        if finding.zone in LATERAL_ZONES:
            return "lateral"
        if finding.term == "pleural effusion" and (
            finding.severity in SMALL or finding.zone == "costophrenic"
        ):
            return "lateral"
    return "any"


def _record(study: StudyLike, question: str, answer: str, content_type: str, view: str,
            term: str | None = None) -> dict[str, Any]:
    record = {
        "qid": 0,
        "img_name": study.study_id,
        "study_id": study.study_id,
        "question": question,
        "answer": answer,
        "answer_type": "CLOSED" if answer in CLOSED_ANSWERS else "OPEN",
        "content_type": content_type,
        "q_lang": "en",
        "required_view": view,
        "split": study.split,
    }
    if term:
        record["term"] = term  # the finding the question is about (per-finding accuracy)
    return record


def _by_term(study: StudyLike) -> dict[str, list[Finding]]:
    grouped: dict[str, list[Finding]] = defaultdict(list)
    for finding in study.findings:
        grouped[finding.term].append(finding)
    return grouped


def _combined_side(findings: Sequence[Finding]) -> str | None:
    sides = {f.side for f in findings if f.side}
    if not sides:
        return None
    return sides.pop() if len(sides) == 1 else "bilateral"


def _name(term: str) -> str:
    """The term's phrase without its article ("a lung opacity" -> "lung opacity")."""
    phrase = TERM_PHRASES[term]
    return phrase.split(" ", 1)[1] if phrase.startswith(("a ", "an ")) else phrase


def _location(finding: Finding) -> str | None:
    if finding.zone == "retrocardiac":
        return "retrocardiac"
    if finding.lobe == "lingula":
        return "lingula"
    place = f"{finding.lobe} lobe" if finding.lobe else ZONE_PHRASES.get(finding.zone or "")
    if place is None:
        return None
    return f"{finding.side} {place}" if finding.side else place


def _single(values: Iterable[str | None]) -> str | None:
    distinct = {v for v in values}
    return distinct.pop() if len(distinct) == 1 else None


def _finding_questions(study: StudyLike, term: str, findings: list[Finding], rng: random.Random):
    """Laterality, location and severity questions about one term of one study."""
    first, np_, name = findings[0], TERM_PHRASES[term], _name(term)
    side = _combined_side(findings)
    if side and term not in NO_SIDE_TERMS:
        if rng.random() < 0.5 or side == "bilateral":
            yield _record(
                study, rng.choice(TEMPLATES["side_open"]).format(t=name), side, "laterality", "frontal", term
            )
        else:
            asked = rng.choice(("left", "right"))
            question = rng.choice(TEMPLATES["side_closed"]).format(t=name, np=np_, side=asked)
            yield _record(study, question, "yes" if asked == side else "no", "laterality", "frontal", term)
    location = _single(_location(f) for f in findings)
    if location:
        yield _record(
            study,
            rng.choice(TEMPLATES["location"]).format(t=name),
            location,
            "location",
            required_view(first, "location", location),
            term,
        )
    level = _single(VERTICAL_LEVEL.get(f.lobe or f.zone or "") for f in findings)
    if level and term not in NO_SIDE_TERMS:
        yield _record(study, rng.choice(TEMPLATES["level"]).format(t=name), level, "location", "any", term)
    severity = _single(f.severity for f in findings)
    if severity:
        yield _record(
            study,
            rng.choice(TEMPLATES["severity"]).format(t=name),
            severity,
            "severity",
            required_view(first, "severity", severity),
            term,
        )


def _study_questions(study: StudyLike, rng: random.Random, image_size: int | None):
    """Every non-presence question about one study, on the findings resolved at ``image_size``."""
    grouped = _by_term(study)
    hidden = any(not resolved_at(term, image_size) for term in grouped)
    abnormal = [t for t in SALIENCE if t in grouped and resolved_at(t, image_size)]
    if abnormal or (study.fully_mapped and "normal" in grouped and not hidden):
        yield _record(
            study, rng.choice(TEMPLATES["normality"]), "no" if abnormal else "yes", "normality", "any"
        )
    if abnormal:
        top = abnormal[0]
        yield _record(
            study,
            rng.choice(TEMPLATES["abnormality"]),
            top,
            "abnormality",
            required_view(grouped[top][0], "abnormality", top),
            top,
        )
    for term in abnormal:
        yield from _finding_questions(study, term, grouped[term], rng)


def _clear_depth(depths: Sequence[float]) -> str | None:
    """``anterior`` / ``posterior`` when every placement lies clearly on that side of the lung's middle."""
    if all(d >= DEPTH_MARGIN for d in depths):
        return "posterior"
    if all(d <= -DEPTH_MARGIN for d in depths):
        return "anterior"
    return None


def _depth_questions(study: StudyLike, seed: int, image_size: int | None):
    """Depth and two-view localisation questions about the lesions the phantom placed.

    Reads ``study.depths`` (:func:`~mvcm_core.data.phantom.render.lesion_depths`); a study without it
    (a real report, no render) gets none. Per lesion term whose placements all lie clearly to one side
    of the lung's middle: "anterior or posterior?" (the lateral answers). With all its placements in
    one lung also "which lung, front or back?"; with placements in both lungs, "is the one in the
    left (right) lung anterior or posterior?" per lung whose placements agree. Both kinds need
    the frontal view for the side and the lateral for the depth (``required_view`` ``both``). Own
    random streams, so the other questions do not change.
    """
    rng = random.Random(f"{seed}:{study.study_id}:depth")
    two_view_rng = random.Random(f"{seed}:{study.study_id}:localisation")
    by_term: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for placed in getattr(study, "depths", None) or []:
        by_term[placed["term"]].append(placed)
    for term, placements in sorted(by_term.items()):
        if not resolved_at(term, image_size) or not any(f.term == term for f in study.findings):
            continue
        name, sides = _name(term), sorted({p["side"] for p in placements})
        answer = _clear_depth([p["depth"] for p in placements])
        if answer:
            yield _record(study, rng.choice(TEMPLATES["depth"]).format(t=name), answer, "depth", "lateral", term)
            if len(sides) == 1:
                yield _record(study, two_view_rng.choice(TEMPLATES["localisation"]).format(t=name),
                              f"{sides[0]} {answer}", "localisation", "both", term)
        if len(sides) == 2:
            for side in sides:
                side_answer = _clear_depth([p["depth"] for p in placements if p["side"] == side])
                if side_answer:
                    question = two_view_rng.choice(TEMPLATES["side_depth"]).format(t=name, side=side)
                    yield _record(study, question, side_answer, "localisation", "both", term)


def _balanced_closed(studies: Sequence[StudyLike], has: dict[str, bool], rng: random.Random):
    """Yes for every positive study, no for as many randomly drawn fully-mapped negatives."""
    positives = [s for s in studies if has[s.study_id]]
    negatives = [s for s in studies if not has[s.study_id] and s.fully_mapped]
    for study in positives:
        yield study, "yes"
    for study in rng.sample(negatives, min(len(positives), len(negatives))):
        yield study, "no"


def _presence_questions(studies: Sequence[StudyLike], seed: int, split: str, image_size: int | None):
    for term in SALIENCE:
        if not resolved_at(term, image_size):
            continue
        rng = random.Random(f"{seed}:{split}:presence:{term}")
        has = {s.study_id: any(f.term == term for f in s.findings) for s in studies}
        for study, answer in _balanced_closed(studies, has, rng):
            question = rng.choice(TEMPLATES["presence"]).format(np=TERM_PHRASES[term])
            view = _presence_view(study, term) if answer == "yes" else "any"
            yield _record(study, question, answer, "presence", view, term)


def _presence_view(study: StudyLike, term: str) -> str:
    views = {required_view(f, "presence", "yes") for f in study.findings if f.term == term}
    return "any" if not views or "any" in views else views.pop()


def _view_questions(studies: Sequence[StudyLike], seed: int, split: str):
    checks = {
        "recess": lambda s: any(f.term == "pleural effusion" for f in s.findings),
        "retrocardiac": lambda s: any(
            f.zone == "retrocardiac" and f.term != "aortic tortuosity" for f in s.findings
        ),
    }
    for key, check in checks.items():
        rng = random.Random(f"{seed}:{split}:view:{key}")
        has = {s.study_id: check(s) for s in studies}
        for study, answer in _balanced_closed(studies, has, rng):
            yield _record(study, rng.choice(TEMPLATES[key]), answer, "view", "lateral",
                          "pleural effusion" if key == "recess" else None)


def generate_vqa(studies: Iterable[StudyLike], seed: int = 0, image_size: int | None = None
                 ) -> list[dict[str, Any]]:
    """Generate SLAKE-style VQA records for every study.

    A question is only asked where the images can answer it: with ``image_size`` set, findings
    whose sign is finer than two pixels at that size (:func:`~mvcm_core.data.phantom.visibility.resolved_at`)
    get no question, and a study whose only findings are such cannot be called normal or not.

    Args:
        studies: studies with ``study_id``, ``split``, ``findings`` and ``fully_mapped``; "no"
            answers are only drawn from fully mapped studies, so an unmapped term cannot hide a "yes".
        seed: seed of every random choice (template, sampled negatives, asked side).
        image_size: side of the images the questions are about; None asks about every finding.

    Returns:
        Records with ``qid`` numbered from 0 in (split, study, question) order.
    """
    by_split: dict[str, list[StudyLike]] = defaultdict(list)
    for study in sorted(studies, key=lambda s: s.study_id):
        by_split[study.split].append(study)
    records: list[dict[str, Any]] = []
    for split in sorted(by_split):
        split_studies = by_split[split]
        for study in split_studies:
            records.extend(_study_questions(study, random.Random(f"{seed}:{study.study_id}"), image_size))
        records.extend(q for study in split_studies for q in _depth_questions(study, seed, image_size))
        records.extend(_presence_questions(split_studies, seed, split, image_size))
        records.extend(_view_questions(split_studies, seed, split))
    records.sort(key=lambda r: (r["split"], r["study_id"], QUESTION_TYPES.index(r["content_type"])))
    for qid, record in enumerate(records):
        record["qid"] = qid
    return records


def build_answer_vocab(records: Iterable[dict[str, Any]], min_count: int = 1) -> list[str]:
    """Sorted answer vocabulary from the **training split only** (other splits are ignored).

    Raises:
        ValueError: when no training record is given.
    """
    counts = Counter(r["answer"] for r in records if r["split"] == "train")
    if not counts:
        raise ValueError("no training-split records: the answer vocabulary is built from train only")
    return sorted(a for a, n in counts.items() if n >= min_count)


def out_of_vocab(records: Iterable[dict[str, Any]], vocab: Iterable[str]) -> dict[str, dict[str, float]]:
    """Per split: number of records, how many answers fall outside ``vocab``, and that share."""
    known, totals, missing = set(vocab), Counter(), Counter()
    for record in records:
        totals[record["split"]] += 1
        missing[record["split"]] += record["answer"] not in known
    return {s: {"records": totals[s], "oov": missing[s], "oov_share": missing[s] / totals[s]} for s in totals}


def question_counts(records: Iterable[dict[str, Any]]) -> dict[str, Counter]:
    """``content_type -> Counter(split)``: how many questions of each type per split."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for record in records:
        counts[record["content_type"]][record["split"]] += 1
    return dict(counts)


def write_qa_json(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write records as one ``qa.json`` list (SLAKE style, with a ``split`` field)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(records), indent=1, ensure_ascii=False) + "\n")
    return path
