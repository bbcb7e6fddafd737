"""Gradio layout and wiring only; behaviour lives in the plain-function modules of :mod:`demo`.

``build_demo(predictor)`` returns the (queued, not launched) Blocks app: a study column (upload,
study picker, gallery, view labels, windowing, file status, metadata) and tabs Ask / Similar
reports / Teaching / Download / About. ``predictor=None`` gives the viewer-only app. Named API
endpoints ``/load_study``, ``/ask`` and ``/retrieve`` are stateless (see :mod:`demo.api`); every
UI event is private.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

DISCLAIMER = (
    "**Teaching and research demonstration only: not a medical device and not a diagnosis.** "
    "Do not upload identifiable patient data; uploads are kept only for your session."
)
LAUNCH_KWARGS: dict[str, Any] = {
    "share": False,
    "max_file_size": "50mb",
    "show_error": False,
    "run_history": False,
    "footer_links": ["api", "settings"],
    "ssr_mode": False,
}
QUEUE_KWARGS: dict[str, Any] = {"default_concurrency_limit": 1, "max_size": 16}


def _study_column(gr: Any, handlers: Any) -> SimpleNamespace:
    files = gr.File(
        label="Study files: 1 to 6 DICOM, PNG or JPEG (one study)",
        file_count="multiple",
        height=140,
        elem_id="study-files",
    )
    pick = gr.Dropdown(label="Study", choices=[], visible=False, interactive=True)
    summary = gr.Markdown(
        "Upload the DICOM files (or PNG / JPEG images) of one study.", elem_id="study-summary"
    )
    gallery = gr.Gallery(
        label="Views",
        format="png",
        columns=2,
        height=300,
        object_fit="contain",
        buttons=["fullscreen", "download"],
        elem_id="views",
    )
    with gr.Row():
        labels = [
            gr.Dropdown(
                handlers.VIEW_CHOICES,
                label=f"view {i + 1} label",
                visible=False,
                interactive=True,
                min_width=100,
            )
            for i in range(handlers.MAX_FILES)
        ]
    with gr.Row():
        preset = gr.Dropdown(handlers.PRESETS, value="file", label="Window (display only)", min_width=120)
        invert = gr.Checkbox(label="Invert", value=False, min_width=80)
    status = gr.Dataframe(headers=handlers.STATUS_COLUMNS, label="Files", interactive=False, wrap=True)
    with gr.Accordion("Technical metadata (no patient data)", open=False):
        meta = gr.JSON(label="Per view")
    return SimpleNamespace(
        files=files,
        pick=pick,
        summary=summary,
        gallery=gallery,
        labels=labels,
        preset=preset,
        invert=invert,
        status=status,
        meta=meta,
    )


def _ask_tab(gr: Any, ask: Any, enabled: bool) -> SimpleNamespace:
    banner = gr.Markdown()
    chat = gr.Chatbot(
        label="Questions and answers",
        height=360,
        buttons=["copy", "copy_all"],
        feedback_options=None,
        placeholder="Load a study, then ask a question.",
        elem_id="chat",
    )
    question = gr.Textbox(
        label="Question",
        placeholder="e.g. Is there a pleural effusion?",
        submit_btn="Ask",
        interactive=enabled,
        max_lines=2,
        elem_id="question",
    )
    gr.Examples([[q] for q in ask.SUGGESTED_QUESTIONS], inputs=[question], label="Suggested questions")
    gr.Markdown(
        "ABCDE asks, in turn: **A**irway, **B**reathing, **C**ardiac, **D**iaphragm, **E**verything else."
    )
    with gr.Row():
        abcde = gr.Button("ABCDE walk-through", interactive=enabled, elem_id="abcde")
        top_k = gr.Slider(1, 10, value=5, step=1, label="Top-k answers")
    with gr.Row():
        scores = gr.Label(label="Answer confidence", num_top_classes=10)
        contributions = gr.Dataframe(
            headers=ask.CONTRIBUTION_COLUMNS, label="Per-view contribution", interactive=False
        )
    opacity = gr.Slider(0.0, 1.0, value=0.45, step=0.05, label="Heat-map opacity")
    overlays = gr.Gallery(
        label="Where the model looked (attention per view)",
        format="png",
        columns=2,
        height=320,
        object_fit="contain",
        elem_id="overlays",
    )
    return SimpleNamespace(
        banner=banner,
        chat=chat,
        question=question,
        abcde=abcde,
        top_k=top_k,
        scores=scores,
        contributions=contributions,
        opacity=opacity,
        overlays=overlays,
    )


def _retrieve_tab(gr: Any, retrieve: Any, enabled: bool) -> SimpleNamespace:
    with gr.Row():
        k = gr.Slider(1, retrieve.MAX_K, value=5, step=1, label="k (reports)")
        section = gr.Radio(retrieve.SECTIONS, value="impression", label="Section shown in the table")
    button = gr.Button(
        "Find similar reports", variant="primary", interactive=enabled, elem_id="retrieve-button"
    )
    banner = gr.Markdown("" if enabled else "_No model with a report index is loaded: retrieval is off._")
    results = gr.Dataframe(
        headers=retrieve.RESULT_COLUMNS,
        label="Similar reports (select a row for the full text)",
        interactive=False,
        wrap=True,
        elem_id="retrieved",
    )
    report = gr.Markdown(elem_id="retrieved-report")
    thumbs = gr.Gallery(label="Retrieved studies", format="png", columns=5, height=200, visible=False)
    return SimpleNamespace(
        k=k, section=section, button=button, banner=banner, results=results, report=report, thumbs=thumbs
    )


def _teaching_tab(gr: Any, files: Any, examples: Sequence[Any]) -> SimpleNamespace:
    if examples:
        gr.Examples(
            [[list(e.files)] for e in examples],
            inputs=[files],
            example_labels=[e.name for e in examples],
            label="Example studies (simulated, with reference reports)",
            cache_examples=False,
        )
    else:
        gr.Markdown("_No example studies are shipped with this installation (`assets/studies/` is empty)._")
    note = gr.Markdown()
    button = gr.Button("Reveal the reference report and score the model", elem_id="reveal")
    report = gr.Markdown(elem_id="reference-report")
    marks = gr.HighlightedText(
        label="Findings the model got right / wrong", color_map={"right": "green", "wrong": "red"}
    )
    return SimpleNamespace(note=note, button=button, report=report, marks=marks)


def _about_tab(gr: Any, about: Any, predictor: Any, notice: str) -> None:
    if notice:
        gr.Markdown(f"**Model not loaded:** {notice}")
    gr.Markdown(about.model_card(predictor))
    rows = about.metric_rows(getattr(predictor, "manifest", None))
    if rows:
        gr.Dataframe(value=rows, headers=about.METRIC_COLUMNS, label="Headline metrics", interactive=False)
    plots = about.eval_plots(predictor)
    if plots:
        gr.Gallery(value=plots, label="Evaluation plots", format="png", columns=2, height=420)


def _api_endpoints(gr: Any, api: Any, predictor: Any, guard: Any) -> None:
    """Stateless named endpoints on hidden components (plain inputs: files, question, k)."""
    from demo.wiring import api_handlers

    handlers = api_handlers(api, predictor, guard)
    with gr.Column(visible=False):
        files = gr.File(label="files", file_count="multiple")
        question = gr.Textbox(label="question")
        top_k = gr.Number(label="top_k / k", value=5, precision=0)
        out = gr.JSON(label="result")
        buttons = [gr.Button(name) for name in ("load_study", "ask", "retrieve")]
    buttons[0].click(handlers[0], [files], out, api_name="load_study", concurrency_id="io")
    buttons[1].click(
        handlers[1],
        [files, question, top_k],
        out,
        api_name="ask",
        concurrency_id="model",
    )
    buttons[2].click(
        handlers[2],
        [files, top_k],
        out,
        api_name="retrieve",
        concurrency_id="model",
    )


def build_demo(
    predictor: Any | None = None,
    *,
    examples_root: str | None = None,
    notice: str = "",
    limits: Any | None = None,
) -> Any:
    """Build the queued Blocks app (not launched); ``predictor=None`` is the viewer-only app.

    ``limits`` (:class:`demo.session.AppLimits`) defaults to the ``MVCM_*`` environment, read once here.
    """
    import gradio as gr
    import pydicom

    from demo import about, api, ask, handlers, retrieve, teaching
    from demo.session import AppLimits, Session, delete_session_files

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE  # never log a DICOM value ...
    pydicom.config.debug(False)  # ... nor dump elements (pydicom's debug mode logs every value it reads)
    limits = limits or AppLimits.from_env()
    guard = api.ApiGuard(limits)

    examples = teaching.find_examples(examples_root)
    enabled = predictor is not None
    with gr.Blocks(
        title="MVCM: multi-view chest radiograph teaching demo",
        analytics_enabled=False,
        delete_cache=(600, 3600),
        fill_width=True,
    ) as demo:
        gr.Markdown(f"# MVCM multi-view chest radiograph teaching demo\n{DISCLAIMER}")
        if not enabled:
            gr.Markdown(f"⚠️ {about.NO_MODEL}" + (f" ({notice})" if notice else ""))
        session = gr.State(Session(), delete_callback=delete_session_files)
        with gr.Row():
            with gr.Column(scale=4):
                study = _study_column(gr, handlers)
            with gr.Column(scale=6):
                with gr.Tab("Ask"):
                    asking = _ask_tab(gr, ask, enabled)
                with gr.Tab("Similar reports"):
                    similar = _retrieve_tab(
                        gr, retrieve, enabled and getattr(predictor, "index", None) is not None
                    )
                with gr.Tab("Teaching"):
                    teach = _teaching_tab(gr, study.files, examples)
                with gr.Tab("Download"):
                    download = SimpleNamespace(
                        button=gr.Button("Build the results zip"),
                        file=gr.File(label="Session results (JSON + PNG + Markdown)", elem_id="results-zip"),
                        clear=gr.Button(
                            "Clear session (deletes everything)", variant="stop", elem_id="clear-session"
                        ),
                    )
                with gr.Tab("About"):
                    _about_tab(gr, about, predictor, notice)
        ui = SimpleNamespace(
            guard=guard,
            demo=demo,
            session=session,
            study=study,
            ask=asking,
            similar=similar,
            teach=teach,
            download=download,
        )
        _wire(ui, predictor, examples)
        _api_endpoints(gr, api, predictor, guard)
    guard.tracker.protect(path for example in examples for path in example.files)
    guard.tracker.install(demo)
    demo.mvcm_limits, demo.mvcm_guard = limits, guard
    return demo.queue(**{**QUEUE_KWARGS, "max_size": limits.queue_size})


def _wire(ui: SimpleNamespace, predictor: Any, examples: Sequence[Any]) -> None:
    """Connect the UI events (all private: the public API is :func:`_api_endpoints`)."""
    from demo import wiring

    wiring.wire_study(ui, examples)
    wiring.wire_ask(ui, predictor)
    wiring.wire_retrieve(ui, predictor)
    wiring.wire_teaching_and_download(ui, predictor, examples)


def load_predictor(checkpoint: str | None = None) -> tuple[Any | None, str]:
    """(Predictor, "") for ``checkpoint`` / ``$MVCM_CHECKPOINT`` / the shipped one, or (None, reason)."""
    try:
        from mvcm_core.inference import Predictor, default_checkpoint

        return Predictor.from_pretrained(
            checkpoint or os.environ.get("MVCM_CHECKPOINT") or default_checkpoint()
        ), ""
    except Exception as exc:  # noqa: BLE001 - any failure means the viewer-only app, with the reason shown
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, load the checkpoint (viewer-only app if that fails) and launch."""
    parser = argparse.ArgumentParser(description="Start the MVCM Gradio app.")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint folder or Hub id (default: MVCM_CHECKPOINT or the shipped one)",
    )
    # one intra-op thread: per study 18.2 ms median against 15.0 ms with two on an idle 2-core machine
    # (PERFORMANCE.md); the second core stays free for another session's request, ingest and the web server
    parser.add_argument("--threads", type=int, default=int(os.environ.get("MVCM_DEMO_THREADS", "1")))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, args.threads))
    predictor, notice = load_predictor(args.checkpoint)
    if predictor is None:
        print(f"[mvcm demo] no model loaded, starting the viewer-only app: {notice}")
    demo = build_demo(predictor, notice=notice)
    kwargs = {**LAUNCH_KWARGS, "max_file_size": demo.mvcm_limits.gradio_max_file_size}
    demo.launch(server_name=args.host, server_port=args.port, **kwargs)
    return 0
