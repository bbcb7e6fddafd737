"""Question answering handlers: chat history, top-k confidences, view contributions, overlays.

Every answer shown or exported carries :data:`NOT_A_DIAGNOSIS`; an out-of-distribution study gets
the :func:`ood_banner`. The ABCDE walk-through (Airway, Breathing, Cardiac, Diaphragm, Everything
else) is a fixed list of questions, phrased like the model's training questions, asked in turn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from demo.handlers import render_view
from demo.overlays import DEFAULT_OPACITY, OVERLAY_MAX_SIDE, overlay_views, save_png
from demo.session import AppLimits, Session, ensure_workdir
from mvcm_core.data.vqa_phrases import TEMPLATES, TERM_PHRASES

NOT_A_DIAGNOSIS = (
    "Not a diagnosis: output of a research model for teaching, not a medical device; "
    "it can be wrong and must not guide patient care."
)
CONTRIBUTION_COLUMNS = ["view", "probability drop without this view"]
Progress = Callable[..., Any]


def presence_question(term: str) -> str:
    """The training-style presence question for a canonical finding term."""
    if term == "normal":
        return TEMPLATES["normality"][0]
    return TEMPLATES["presence"][0].format(np=TERM_PHRASES[term])


ABCDE: dict[str, list[str]] = {
    "A: Airway": [presence_question(t) for t in ("mediastinal widening", "hilar enlargement")],
    "B: Breathing": [presence_question(t) for t in ("pneumothorax", "opacity", "pleural effusion", "nodule")],
    "C: Cardiac": [presence_question("cardiomegaly")],
    "D: Diaphragm": [
        presence_question("diaphragm elevation"),
        TEMPLATES["recess"][0],
        presence_question("hiatal hernia"),
    ],
    "E: Everything else": [presence_question(t) for t in ("fracture", "device", "normal")],
}
SUGGESTED_QUESTIONS: list[str] = [
    presence_question("pleural effusion"),
    presence_question("cardiomegaly"),
    presence_question("pneumothorax"),
    TEMPLATES["normality"][0],
    TEMPLATES["abnormality"][1],
    "Which side is the pleural effusion on?",
]


def check_question(question: str | None, limits: AppLimits | None = None) -> str:
    """The question, if within ``max_question_chars`` (the Predictor also caps it at its own limit).

    Raises:
        ValueError: too long (one line, with the limit and its variable).
    """
    limit = (limits or AppLimits()).max_question_chars
    question = question or ""
    if len(question) > limit:
        raise ValueError(
            f"The question has {len(question)} characters; the limit is {limit} (MVCM_MAX_QUESTION_CHARS)."
        )
    return question


def abcde_steps() -> list[tuple[str, str]]:
    """(step, question) pairs of the ABCDE walk-through, in order."""
    return [(step, question) for step, questions in ABCDE.items() for question in questions]


def ood_banner(in_distribution: bool | None, score: float | None) -> str:
    """Markdown warning when the study is out of distribution (empty otherwise)."""
    if in_distribution is not False:
        return ""
    detail = f" (score {score:.2f})" if score is not None else ""
    return (
        "⚠️ **Out of distribution**: this study does not look like the studies the model was trained on"
        f"{detail}. Its answers and retrieved reports are unreliable."
    )


def format_answer(answer: dict[str, Any]) -> str:
    """Markdown for the chat: the answer, its confidence, the alternatives, the disclaimer."""
    lines = [f"**{answer['answer']}** ({answer['probability']:.0%} confidence)"]
    others = [f"{name} {p:.0%}" for name, p in answer["alternatives"][1:]]
    if others:
        lines.append("Alternatives: " + ", ".join(others))
    banner = ood_banner(answer.get("in_distribution"), answer.get("ood_score"))
    if banner:
        lines.append(banner)
    lines.append(f"_{NOT_A_DIAGNOSIS}_")
    return "\n\n".join(lines)


def confidences(answer: dict[str, Any] | None) -> dict[str, float]:
    """{answer: probability} for a ``gr.Label``."""
    return {name: float(p) for name, p in answer["alternatives"]} if answer else {}


def contribution_rows(answer: dict[str, Any] | None) -> list[list[Any]]:
    """[view, probability drop of the chosen answer when that view is left out] rows."""
    if not answer:
        return []
    return [[view, round(float(drop), 4)] for view, drop in answer["view_contributions"].items()]


def overlays(
    session: Session, answer: dict[str, Any] | None, opacity: float = DEFAULT_OPACITY
) -> list[tuple[np.ndarray, str]]:
    """Heat-map overlay per view of the selected study for one answer."""
    study = session.study
    if study is None or not answer:
        return []
    images = [render_view(v, session.preset, session.invert, OVERLAY_MAX_SIDE) for v in study.views]
    from mvcm_core.inference import view_names

    labels = view_names([label for _, label in session.model_views()])  # the keys of attention_maps
    return overlay_views(images, labels, answer["attention_maps"], opacity)


@dataclass
class AskResult:
    """What the Ask tab shows after an answer (plain values)."""

    history: list[dict[str, Any]]
    confidences: dict[str, float]
    contributions: list[list[Any]]
    overlays: list[tuple[np.ndarray, str]]
    banner: str
    answer: dict[str, Any] | None


def answer_question(
    session: Session, predictor: Any, question: str, top_k: int = 5, session_hash: str | None = None
) -> dict[str, Any]:
    """Ask the Predictor about the selected study; the answer is recorded in the session.

    Raises:
        ValueError: no model, no study, or an empty / too long question (one line).
    """
    if predictor is None:
        raise ValueError("No model is loaded (viewer-only mode): questions cannot be answered.")
    answer = predictor.answer(session.model_views(), question, top_k=int(top_k)).to_dict()
    answer["disclaimer"] = NOT_A_DIAGNOSIS
    session.answers.append(answer)
    workdir = ensure_workdir(session, session_hash)
    for number, (image, _) in enumerate(overlays(session, answer), start=1):
        name = Path(workdir) / f"answer-{len(session.answers):02d}-view-{number}.png"
        session.overlay_files.append(save_png(image, str(name)))
    return answer


def ask(
    session: Session,
    predictor: Any,
    question: str,
    history: Sequence[dict[str, Any]] | None,
    top_k: int = 5,
    opacity: float = DEFAULT_OPACITY,
    session_hash: str | None = None,
    prefix: str = "",
) -> AskResult:
    """One chat turn: answer ``question`` and append both messages to the history."""
    answer = answer_question(session, predictor, question, top_k, session_hash)
    user = f"**{prefix}**: {answer['question']}" if prefix else answer["question"]
    history = [
        *(history or []),
        {"role": "user", "content": user},
        {"role": "assistant", "content": format_answer(answer)},
    ]
    return AskResult(
        history,
        confidences(answer),
        contribution_rows(answer),
        overlays(session, answer, opacity),
        ood_banner(answer["in_distribution"], answer["ood_score"]),
        answer,
    )


def ask_sequence(
    session: Session,
    predictor: Any,
    steps: Sequence[tuple[str, str]],
    history: Sequence[dict[str, Any]] | None,
    top_k: int = 5,
    opacity: float = DEFAULT_OPACITY,
    session_hash: str | None = None,
    progress: Progress | None = None,
) -> Iterator[AskResult]:
    """Ask (step, question) pairs in turn (the ABCDE walk-through), yielding after each answer."""
    history = list(history or [])
    for number, (step, question) in enumerate(steps, start=1):
        if progress is not None:
            progress(number / max(len(steps), 1), desc=f"{step}: {question}")
        result = ask(session, predictor, question, history, top_k, opacity, session_hash, prefix=step)
        history = result.history
        yield result


def redraw(session: Session, opacity: float) -> list[tuple[np.ndarray, str]]:
    """The overlays of the latest answer at a new opacity (no model call)."""
    return overlays(session, session.answers[-1] if session.answers else None, opacity)
