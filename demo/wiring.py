"""Event wiring of the Blocks app: thin adapters from Gradio events to the plain handlers.

Each adapter unpacks component values, calls a handler of :mod:`demo.handlers`, :mod:`demo.ask`,
:mod:`demo.retrieve`, :mod:`demo.teaching` or :mod:`demo.export`, and maps the result onto output
components (``gr.update`` where a property other than the value changes). All events are private.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
import gradio as gr

from demo import ask, export, handlers, retrieve, teaching
from demo.session import Session, clear_session, drop_session_dir

MODEL = {"concurrency_id": "model", "concurrency_limit": 1, "api_visibility": "private"}
PRIVATE = {"api_visibility": "private"}
PROGRESS = gr.Progress()  # Gradio injects a tracker wherever a parameter defaults to a Progress
EXAMPLE_NOTE = "This is the shipped example **{name}**: reveal its reference report below."


def app_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """API endpoints: a handler's ValueError (one line) becomes ``gr.Error`` (``AppError`` for clients)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ValueError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    return wrapper


def warns(outputs: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """UI events: a handler's ValueError becomes a warning toast and every output is left as it was."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except ValueError as exc:
                gr.Warning(str(exc))
                return [gr.skip()] * outputs if outputs > 1 else gr.skip()

        return wrapper

    return decorate


def _study_outputs(ui: SimpleNamespace) -> list[Any]:
    s = ui.study
    return [s.gallery, s.status, s.summary, s.pick, *s.labels, s.meta]


def _reset_outputs(ui: SimpleNamespace) -> list[Any]:
    a, r, t = ui.ask, ui.similar, ui.teach
    return [
        a.chat,
        a.scores,
        a.contributions,
        a.overlays,
        a.banner,
        r.results,
        r.banner,
        r.report,
        r.thumbs,
        t.note,
        t.report,
        t.marks,
        ui.download.file,
    ]


def _study_values(session: Session) -> list[Any]:
    panel = handlers.study_panel(session)
    labels = [
        gr.update(value=panel.labels[i], visible=True)
        if i < len(panel.labels)
        else gr.update(value=None, visible=False)
        for i in range(handlers.MAX_FILES)
    ]
    summary = panel.summary + (f"\n\n{EXAMPLE_NOTE.format(name=session.example)}" if session.example else "")
    picker = gr.update(choices=panel.choices, value=panel.choice, visible=len(panel.choices) > 1)
    return [panel.gallery, panel.rows, summary, picker, *labels, panel.meta]


def _reset_values(session: Session) -> list[Any]:
    note = EXAMPLE_NOTE.format(name=session.example) if session.example else ""
    return [[], None, [], [], "", [], "", "", gr.update(value=[], visible=False), note, "", [], None]


def admit(ui: SimpleNamespace, request: gr.Request | None) -> None:
    """Take one request token of this browser session (a one-line ValueError when there is none)."""
    ui.guard.limiter.check(getattr(request, "session_hash", None))


def wire_study(ui: SimpleNamespace, examples: Sequence[teaching.ExampleStudy]) -> None:
    """Upload, study picker, label correction, display window and inversion."""
    s, match = ui.study, teaching.example_matcher(examples)
    full = [ui.session, *_study_outputs(ui), *_reset_outputs(ui)]

    @warns(len(full))
    def on_files(
        session: Session, files: list[str] | None, request: gr.Request, progress: Any = PROGRESS
    ) -> list[Any]:
        ui.guard.tracker.hold(request.session_hash, files)
        ui.guard.tracker.sweep()
        if files:
            admit(ui, request)
        session = handlers.ingest(session, files, match, progress, ui.guard.limits)
        return [session, *_study_values(session), *_reset_values(session)]

    def on_pick(session: Session, choice: str | None) -> list[Any]:
        session = handlers.select_study(session, choice)
        return [session, *_study_values(session), *_reset_values(session)]

    def on_labels(session: Session, *labels: str | None) -> list[Any]:
        session = handlers.set_labels(session, labels)
        return [session, handlers.study_panel(session).gallery]

    def on_display(session: Session, preset: str | None, invert: bool, opacity: float) -> list[Any]:
        session = handlers.set_display(session, preset, invert)
        return [session, handlers.study_panel(session).gallery, ask.redraw(session, opacity)]

    s.files.change(on_files, [ui.session, s.files], full, **PRIVATE, concurrency_id="io")
    s.pick.input(on_pick, [ui.session, s.pick], full, **PRIVATE)
    gr.on([d.input for d in s.labels], on_labels, [ui.session, *s.labels], [ui.session, s.gallery], **PRIVATE)
    gr.on(
        [s.preset.input, s.invert.input],
        on_display,
        [ui.session, s.preset, s.invert, ui.ask.opacity],
        [ui.session, s.gallery, ui.ask.overlays],
        trigger_mode="always_last",
        **PRIVATE,
    )


def _ask_values(session: Session, result: ask.AskResult) -> list[Any]:
    return [
        session,
        result.history,
        result.confidences,
        result.contributions,
        result.overlays,
        result.banner,
        "",
    ]


def wire_ask(ui: SimpleNamespace, predictor: Any) -> None:
    """A question, the ABCDE walk-through, and the opacity slider."""
    a = ui.ask
    outputs = [ui.session, a.chat, a.scores, a.contributions, a.overlays, a.banner, a.question]

    @warns(len(outputs))
    def on_ask(
        session: Session,
        question: str,
        history: list[dict[str, Any]] | None,
        top_k: float,
        opacity: float,
        request: gr.Request,
    ) -> list[Any]:
        admit(ui, request)
        ask.check_question(question, ui.guard.limits)
        result = ask.ask(session, predictor, question, history, int(top_k), opacity, request.session_hash)
        return _ask_values(session, result)

    def on_abcde(
        session: Session,
        history: list[dict[str, Any]] | None,
        top_k: float,
        opacity: float,
        request: gr.Request,
        progress: Any = PROGRESS,
    ) -> Any:
        try:
            admit(ui, request)
            for result in ask.ask_sequence(
                session,
                predictor,
                ask.abcde_steps(),
                history,
                int(top_k),
                opacity,
                request.session_hash,
                progress,
            ):
                yield _ask_values(session, result)
        except ValueError as exc:  # e.g. no study loaded: warn, keep what is shown
            gr.Warning(str(exc))

    a.question.submit(
        on_ask, [ui.session, a.question, a.chat, a.top_k, a.opacity], outputs, **MODEL, trigger_mode="once"
    )
    a.abcde.click(on_abcde, [ui.session, a.chat, a.top_k, a.opacity], outputs, **MODEL, trigger_mode="once")
    a.opacity.release(
        lambda session, opacity: ask.redraw(session, opacity), [ui.session, a.opacity], a.overlays, **PRIVATE
    )


def wire_retrieve(ui: SimpleNamespace, predictor: Any) -> None:
    """Retrieval, section switch and full report on row select."""
    r = ui.similar

    @warns(5)
    def on_retrieve(session: Session, k: float, section: str, request: gr.Request) -> list[Any]:
        admit(ui, request)
        result = retrieve.retrieve(session, predictor, int(k), section)
        return [
            session,
            result.rows,
            result.banner,
            result.report,
            gr.update(value=result.thumbnails, visible=bool(result.thumbnails)),
        ]

    def on_select(session: Session, event: gr.SelectData) -> str:
        row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
        return retrieve.select_report(session, row)

    r.button.click(
        on_retrieve,
        [ui.session, r.k, r.section],
        [ui.session, r.results, r.banner, r.report, r.thumbs],
        **MODEL,
        trigger_mode="once",
    )
    r.section.input(retrieve.latest_rows, [ui.session, r.section], r.results, **PRIVATE)
    r.results.select(on_select, [ui.session], r.report, **PRIVATE)


def wire_teaching_and_download(
    ui: SimpleNamespace, predictor: Any, examples: Sequence[teaching.ExampleStudy]
) -> None:
    """Reveal the reference report, build the zip, clear the session, clean up on unload."""
    t, d, s = ui.teach, ui.download, ui.study

    @warns(3)
    def on_reveal(session: Session, request: gr.Request, progress: Any = PROGRESS) -> list[Any]:
        admit(ui, request)
        text, marks = teaching.reveal(session, predictor, examples, progress, request.session_hash)
        return [session, text, marks]

    @warns(2)
    def on_zip(session: Session, request: gr.Request) -> list[Any]:
        return [session, str(export.build_zip(session, request.session_hash))]

    def on_clear(session: Session, request: gr.Request) -> list[Any]:
        drop_session_dir(request.session_hash)
        ui.guard.tracker.drop(request.session_hash)
        session = clear_session(session)
        return [session, None, *_study_values(session), *_reset_values(session)]

    def on_unload(request: gr.Request) -> None:
        drop_session_dir(request.session_hash)
        ui.guard.tracker.drop(request.session_hash)

    t.button.click(on_reveal, [ui.session], [ui.session, t.report, t.marks], **MODEL, trigger_mode="once")
    d.button.click(on_zip, [ui.session], [ui.session, d.file], **PRIVATE)
    d.clear.click(
        on_clear, [ui.session], [ui.session, s.files, *_study_outputs(ui), *_reset_outputs(ui)], **PRIVATE
    )
    ui.demo.unload(on_unload)


def api_handlers(api: Any, predictor: Any, guard: Any) -> list[Callable[..., Any]]:
    """The ``/load_study``, ``/ask`` and ``/retrieve`` functions: rate-limited, uploads released after."""
    limits = guard.limits

    def load_study(files: list[str] | None, request: gr.Request) -> dict[str, Any]:
        return guard.run(request.session_hash, files, api.load_study, files, limits)

    def ask_api(files: list[str] | None, question: str, top_k: float, request: gr.Request) -> dict[str, Any]:
        return guard.run(request.session_hash, files, api.ask, predictor, files, question, top_k, limits)

    def retrieve_api(files: list[str] | None, k: float, request: gr.Request) -> dict[str, Any]:
        return guard.run(request.session_hash, files, api.retrieve, predictor, files, k, limits)

    return [app_errors(load_study), app_errors(ask_api), app_errors(retrieve_api)]
