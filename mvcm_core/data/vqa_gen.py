"""Generate VQA records (SLAKE / VQA-RAD style) from the structured findings of studies.

Question types (``content_type``): ``presence`` (yes/no, balanced per finding within a split),
``laterality``, ``location``, ``severity``, ``normality`` ("is this study normal?"), ``abnormality``
("what abnormality is present?", the most salient finding), ``view`` (questions only one view
answers) and ``depth`` (is an opacity, nodule or mass anterior or posterior in its lung: asked from
where the phantom placed it, which a projection does not keep). Every record names the view its
answer needs (``required_view``): left/right needs the frontal view; depth, small effusions, the
posterior costophrenic recess and retrocardiac findings need the lateral. Output is deterministic
for a given seed and input.
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

QUESTION_TYPES = ("presence", "laterality", "location", "severity", "normality", "abnormality", "view", "depth")
CLOSED_ANSWERS = ("yes", "no")

# most salient first: the answer to "what abnormality is present?"
SALIENCE: tuple[str, ...] = (
    "pneumothorax",
    "mass",
    "pleural effusion",
    "edema",
    "opacity",
    "cardiomegaly",
    "nodule",
    "atelectasis",
    "hiatal hernia",
    "fracture",
    "emphysema",
    "mediastinal widening",
    "hilar enlargement",
    "low lung volumes",
    "device",
    "pleural thickening",
    "increased markings",
    "diaphragm elevation",
    "scarring",
    "calcified granuloma",
    "aortic tortuosity",
    "scoliosis",
    "degenerative spine",
    "osteopenia",
)
# noun phrase used in questions, per canonical term
TERM_PHRASES: dict[str, str] = {
    "cardiomegaly": "cardiomegaly",
    "pleural effusion": "a pleural effusion",
    "pneumothorax": "a pneumothorax",
    "opacity": "a lung opacity",
    "atelectasis": "atelectasis",
    "nodule": "a lung nodule",
    "mass": "a mass",
    "calcified granuloma": "a calcified granuloma",
    "emphysema": "emphysema or hyperinflation",
    "edema": "pulmonary edema",
    "hiatal hernia": "a hiatal hernia",
    "scoliosis": "a spinal curvature",
    "fracture": "a fracture",
    "device": "a medical device",
    "degenerative spine": "degenerative change of the spine",
    "aortic tortuosity": "a tortuous or calcified aorta",
    "scarring": "lung scarring",
    "pleural thickening": "pleural thickening",
    "hilar enlargement": "hilar enlargement",
    "diaphragm elevation": "an elevated hemidiaphragm",
    "low lung volumes": "low lung volumes",
    "increased markings": "increased lung markings",
    "mediastinal widening": "a widened mediastinum",
    "osteopenia": "osteopenia",
}
# terms whose side is not a meaningful question (midline, diffuse or device-specific)
NO_SIDE_TERMS = frozenset(
    {
        "normal",
        "cardiomegaly",
        "device",
        "scoliosis",
        "degenerative spine",
        "aortic tortuosity",
        "hiatal hernia",
        "emphysema",
        "osteopenia",
        "low lung volumes",
    }
)
LATERAL_ZONES = frozenset({"retrocardiac", "posterior"})
SMALL = frozenset({"minimal", "small"})
VERTICAL_LEVEL = {
    "apex": "upper",
    "upper": "upper",
    "base": "lower",
    "lower": "lower",
    "costophrenic": "lower",
    "middle": "middle",
    "lingula": "middle",
}
ZONE_PHRASES = {
    "base": "base",
    "middle": "mid zone",
    "apex": "apex",
    "hilar": "hilum",
    "costophrenic": "costophrenic angle",
    "paratracheal": "paratracheal region",
    "posterior": "posterior chest",
    "anterior": "anterior chest",
}

TEMPLATES: dict[str, tuple[str, ...]] = {
    "presence": ("Is there {np}?", "Does this study show {np}?", "Can you see {np}?", "Is {np} present?"),
    "side_open": (
        "Which side is the {t} on?",
        "On which side is the {t}?",
        "Is the {t} left, right or bilateral?",
    ),
    "side_closed": ("Is the {t} on the {side}?", "Is there {np} on the {side} side?"),
    "location": ("Where is the {t}?", "Where is the {t} located?", "In which part of the chest is the {t}?"),
    "level": ("Is the {t} in the upper, middle or lower lung?", "At what level of the lung is the {t}?"),
    "severity": ("How severe is the {t}?", "What is the size or grade of the {t}?", "How large is the {t}?"),
    "normality": ("Is this study normal?", "Is this chest radiograph normal?", "Are there no abnormalities?"),
    "abnormality": (
        "What abnormality is present?",
        "What is the main finding?",
        "What is abnormal in this study?",
    ),
    "recess": (
        "Is there fluid in the posterior costophrenic recess?",
        "Is the posterior costophrenic recess blunted by fluid?",
    ),
    "retrocardiac": ("Is there a retrocardiac opacity?", "Is there an opacity behind the heart?"),
    "depth": ("Is the {t} anterior or posterior?", "Is the {t} in the front or the back of the lung?",
              "Does the {t} lie anteriorly or posteriorly?"),
}
DEPTH_MARGIN = 0.25  # |depth| (-1 front edge .. +1 back edge of the lung) below this is not asked


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


def _depth_questions(study: StudyLike, seed: int, image_size: int | None):
    """"Anterior or posterior?" for each lesion term whose placements all lie clearly to one side.

    Reads ``study.depths`` (:func:`~mvcm_core.data.phantom.render.lesion_depths`); a study without it
    (a real report, no render) gets none. Own random stream, so the other questions do not change.
    """
    rng = random.Random(f"{seed}:{study.study_id}:depth")
    by_term: dict[str, list[float]] = defaultdict(list)
    for placed in getattr(study, "depths", None) or []:
        by_term[placed["term"]].append(placed["depth"])
    for term, depths in sorted(by_term.items()):
        if not resolved_at(term, image_size) or not any(f.term == term for f in study.findings):
            continue
        if all(d >= DEPTH_MARGIN for d in depths) or all(d <= -DEPTH_MARGIN for d in depths):
            answer = "posterior" if depths[0] > 0 else "anterior"
            yield _record(study, rng.choice(TEMPLATES["depth"]).format(t=_name(term)), answer, "depth", "lateral",
                          term)


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
