"""Med-VQA metrics: exact-match accuracy after normalisation, under both open/closed conventions.

Two conventions for "closed" circulate in the literature and give different numbers for the same
predictions (``reference/seed-papers.md`` §0.3):

* ``dataset`` — the record's own ``answer_type`` field (M3AE, SLAKE, VQA-RAD);
* ``yes_no`` — closed ⇔ the normalised ground truth is ``yes`` or ``no`` (AMiF / MVCM).

:func:`vqa_accuracy` reports both, plus breakdowns per question type (``content_type``), per
``required_view`` and per finding term. Missing or empty predictions count as wrong and are counted.
numpy and the standard library only: no torch here.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

YES_NO = ("yes", "no")
MISSING = "<missing>"  # what a missing / empty prediction is shown as in confusions

_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCT = re.compile(r"[\"'`,;:!?()\[\]{}]")
_NON_DECIMAL_DOT = re.compile(r"(?<!\d)\.|\.(?!\d)")  # a period that is not inside a number like 1.5
_SPACES = re.compile(r"\s+")

Record = Mapping[str, Any]


def normalise_answer(text: str | None) -> str:
    """Normalise an answer for exact-match comparison.

    Steps, in order: ``None`` -> ``""``; Unicode NFKC; lower-case; the characters
    ``" ' ` , ; : ! ? ( ) [ ] { }`` and every period not between two digits (``1.5`` is kept)
    become spaces; the whole words ``a``, ``an`` and ``the`` are dropped; whitespace is collapsed
    and stripped. Hyphens and slashes are kept (``x-ray``, ``left/right``); number words are *not*
    mapped to digits (the generated answers contain none).

    Examples:
        ``"  The Left  Lower Lobe. "`` -> ``"left lower lobe"``; ``"Yes!"`` -> ``"yes"``.
    """
    if text is None:
        return ""
    text = unicodedata.normalize("NFKC", str(text)).lower()
    text = _NON_DECIMAL_DOT.sub(" ", _PUNCT.sub(" ", text))
    text = _ARTICLES.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def _cell(correct: int, n: int) -> dict[str, Any]:
    """``{"accuracy", "correct", "n"}``; accuracy is ``None`` for an empty group (JSON-safe)."""
    return {"accuracy": correct / n if n else None, "correct": int(correct), "n": int(n)}


def _prediction(predictions: Mapping[Any, Any], qid: Any) -> str | None:
    """Look a qid up as given, then as ``str`` (JSON turns integer keys into strings)."""
    if qid in predictions:
        return predictions[qid]
    return predictions.get(str(qid))


def _terms(record: Record) -> list[str]:
    """Finding terms a record is about: ``findings_terms`` (list) or ``term`` (str), else none."""
    terms = record.get("findings_terms")
    if terms is None:
        term = record.get("term")
        terms = [term] if term else []
    elif isinstance(terms, str):
        terms = [terms]
    return [str(t) for t in terms if t]


def _answer_type(record: Record) -> str:
    kind = str(record.get("answer_type", "")).upper()
    if kind not in ("OPEN", "CLOSED"):
        raise ValueError(f"qid {record.get('qid')!r}: answer_type must be OPEN or CLOSED, got {kind!r}")
    return kind


def score_records(records: Sequence[Record], predictions: Mapping[Any, Any]) -> list[dict[str, Any]]:
    """Per-record scoring: normalised ground truth and prediction, correctness, and both closed flags.

    Raises:
        ValueError: on a duplicate ``qid`` or an ``answer_type`` other than OPEN / CLOSED.
    """
    seen: set[str] = set()
    scored = []
    for record in records:
        qid = record["qid"]
        if str(qid) in seen:
            raise ValueError(f"duplicate qid {qid!r}")
        seen.add(str(qid))
        truth = normalise_answer(record["answer"])
        raw = _prediction(predictions, qid)
        pred = normalise_answer(raw)
        scored.append(
            {
                "qid": qid,
                "truth": truth,
                "pred": pred if pred else MISSING,
                "missing": not pred,
                "correct": bool(pred) and pred == truth,
                "closed_dataset": _answer_type(record) == "CLOSED",
                "closed_yes_no": truth in YES_NO,
                "content_type": str(record.get("content_type", "unknown")),
                "required_view": str(record.get("required_view") or "unknown"),
                "terms": _terms(record),
                "question": str(record.get("question", "")),
            }
        )
    return scored


def _convention(scored: Sequence[dict[str, Any]], flag: str) -> dict[str, dict[str, Any]]:
    closed = [s["correct"] for s in scored if s[flag]]
    opened = [s["correct"] for s in scored if not s[flag]]
    return {
        "open": _cell(sum(opened), len(opened)),
        "closed": _cell(sum(closed), len(closed)),
        "overall": _cell(sum(closed) + sum(opened), len(scored)),
    }


def _grouped(scored: Sequence[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    correct: Counter = Counter()
    total: Counter = Counter()
    for s in scored:
        groups = s[key] if isinstance(s[key], list) else [s[key]]
        for group in groups:
            total[group] += 1
            correct[group] += s["correct"]
    return {g: _cell(correct[g], total[g]) for g in sorted(total)}


def vqa_accuracy(records: Sequence[Record], predictions: Mapping[Any, Any]) -> dict[str, Any]:
    """Exact-match accuracy after :func:`normalise_answer`, with every breakdown the report needs.

    Args:
        records: dicts with ``qid``, ``answer``, ``answer_type`` (OPEN / CLOSED), ``content_type``;
            optional ``required_view``, ``question`` and ``findings_terms`` (list) or ``term`` (str).
        predictions: ``qid -> predicted answer``; keys may be the qid or its string form. Missing,
            ``None`` or empty predictions are wrong and counted in ``missing``.

    Returns:
        ``n``, ``missing``, ``extra_predictions`` (qids not in ``records``), ``overall``,
        ``conventions`` (``dataset`` and ``yes_no``, each with ``open`` / ``closed`` / ``overall``),
        ``by_content_type``, ``by_required_view`` and ``by_finding``. Every cell is
        ``{"accuracy", "correct", "n"}`` (accuracy ``None`` when ``n`` is 0). A question about
        several findings counts once under each.
    """
    scored = score_records(records, predictions)
    known = {str(s["qid"]) for s in scored}
    correct = sum(s["correct"] for s in scored)
    return {
        "n": len(scored),
        "missing": sum(s["missing"] for s in scored),
        "extra_predictions": sum(str(q) not in known for q in predictions),
        "overall": _cell(correct, len(scored)),
        "conventions": {
            "dataset": _convention(scored, "closed_dataset"),
            "yes_no": _convention(scored, "closed_yes_no"),
        },
        "by_content_type": _grouped(scored, "content_type"),
        "by_required_view": _grouped(scored, "required_view"),
        "by_finding": _grouped(scored, "terms"),
    }


def _majority(answers: Iterable[str]) -> str | None:
    """Most frequent answer; ties go to the alphabetically first (deterministic)."""
    counts = Counter(answers)
    if not counts:
        return None
    return min(counts, key=lambda a: (-counts[a], a))


def _constant_predictions(records: Sequence[Record], answer_of) -> dict[Any, str]:
    return {r["qid"]: answer_of(r) for r in records}


def majority_baselines(train_records: Sequence[Record], eval_records: Sequence[Record]) -> dict[str, Any]:
    """Blind baselines fitted on train answers only and scored with :func:`vqa_accuracy` on eval.

    * ``global_majority`` — the most frequent training answer, for every question;
    * ``type_majority`` — the most frequent training answer of the question's ``content_type``
      (falls back to the global majority for a type unseen in train);
    * ``closed_constant`` — CLOSED questions (dataset ``answer_type``) all get "yes" or all get
      "no", whichever is more frequent among closed training questions; OPEN questions get the
      most frequent open training answer;
    * ``question_majority`` — the most frequent training answer of the exact normalised question
      text (the strongest question-only prior for templated questions), falling back to
      ``type_majority``.

    Returns:
        ``name -> {"description", "metrics"}`` plus ``answer`` for the constant baselines.
    """
    if not train_records:
        raise ValueError("majority baselines need training records")
    answers = [normalise_answer(r["answer"]) for r in train_records]
    overall = _majority(answers)
    by_type: dict[str, list[str]] = defaultdict(list)
    by_question: dict[str, list[str]] = defaultdict(list)
    for record, answer in zip(train_records, answers):
        by_type[str(record.get("content_type", "unknown"))].append(answer)
        by_question[normalise_answer(record.get("question", ""))].append(answer)
    type_major = {t: _majority(a) for t, a in by_type.items()}
    question_major = {q: _majority(a) for q, a in by_question.items()}
    closed_train = [a for r, a in zip(train_records, answers) if _answer_type(r) == "CLOSED"]
    open_train = [a for r, a in zip(train_records, answers) if _answer_type(r) == "OPEN"]
    yes_no = max(YES_NO, key=lambda a: (closed_train.count(a), a == "yes"))
    open_major = _majority(open_train) or overall

    def by_type_answer(r: Record) -> str:
        return type_major.get(str(r.get("content_type", "unknown")), overall)

    def by_question_answer(r: Record) -> str:
        return question_major.get(normalise_answer(r.get("question", "")), by_type_answer(r))

    def closed_answer(r: Record) -> str:
        return yes_no if _answer_type(r) == "CLOSED" else open_major

    specs = {
        "global_majority": ("most frequent train answer for every question", lambda r: overall),
        "type_majority": ("most frequent train answer per question type", by_type_answer),
        "closed_constant": (f"closed: always '{yes_no}'; open: '{open_major}'", closed_answer),
        "question_majority": ("most frequent train answer per question text", by_question_answer),
    }
    result: dict[str, Any] = {}
    for name, (description, answer_of) in specs.items():
        preds = _constant_predictions(eval_records, answer_of)
        result[name] = {"description": description, "metrics": vqa_accuracy(eval_records, preds)}
    result["global_majority"]["answer"] = overall
    result["closed_constant"]["answer"] = {"CLOSED": yes_no, "OPEN": open_major}
    return result


def top_confusions(records: Sequence[Record], predictions: Mapping[Any, Any], k: int = 15) -> list[dict]:
    """The ``k`` most frequent errors as (question type, ground truth, prediction) triples.

    Returns:
        Dicts ``{"content_type", "answer", "prediction", "count", "share_of_errors", "example_qid",
        "example_question"}``, most frequent first (ties: alphabetical). The example is the
        first such error in record order. Missing predictions show as ``<missing>``.
    """
    scored = score_records(records, predictions)
    errors = [s for s in scored if not s["correct"]]
    counts: Counter = Counter()
    example: dict[tuple[str, str, str], dict[str, Any]] = {}
    for s in errors:
        key = (s["content_type"], s["truth"], s["pred"])
        counts[key] += 1
        example.setdefault(key, s)
    ordered = sorted(counts, key=lambda key: (-counts[key], key))[:k]
    return [
        {
            "content_type": key[0],
            "answer": key[1],
            "prediction": key[2],
            "count": counts[key],
            "share_of_errors": counts[key] / len(errors),
            "example_qid": example[key]["qid"],
            "example_question": example[key]["question"],
        }
        for key in ordered
    ]


def out_of_vocabulary(records: Sequence[Record], vocabulary: Iterable[str]) -> dict[str, Any]:
    """Share of eval answers outside the (train-only) answer vocabulary, by dataset answer type.

    A classifier over ``vocabulary`` can never answer those questions, so ``max_accuracy``
    (``1 - share``) bounds the accuracy any such model can reach.

    Returns:
        ``{"overall" | "OPEN" | "CLOSED": {"n", "oov", "share", "max_accuracy"}}`` (both sides
        normalised with :func:`normalise_answer`; share ``None`` for an empty group).
    """
    known = {normalise_answer(a) for a in vocabulary}
    total: Counter = Counter()
    missing: Counter = Counter()
    for record in records:
        outside = normalise_answer(record["answer"]) not in known
        for group in ("overall", _answer_type(record)):
            total[group] += 1
            missing[group] += outside
    result = {}
    for group in ("overall", "OPEN", "CLOSED"):
        n, oov = total[group], missing[group]
        share = oov / n if n else None
        result[group] = {
            "n": n,
            "oov": oov,
            "share": share,
            "max_accuracy": None if share is None else 1.0 - share,
        }
    return result
