"""Gradio layout and wiring only; behaviour lives in :mod:`demo.handlers`.

At this stage the app is the ingestion shell: upload a study, see each view windowed and labelled,
and the reason for every rejected file. Question answering and retrieval plug in through the
``predictor`` argument once a served checkpoint exists.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from mvcm_core.data.windowing import PERCENTILE_PRESETS

DISCLAIMER = ("Teaching and research demonstration only, not a medical device and not a diagnosis. "
              "Do not upload identifiable patient data.")


def build_demo(predictor: Any | None = None) -> Any:
    """Build the Blocks app (not launched)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from demo import handlers

    def on_upload(files: list[str] | None, preset: str) -> tuple[list, list, str, Any]:
        studies, rows, summary = handlers.load_upload(files)
        gallery = handlers.gallery_items(studies[0], preset) if studies else []
        return gallery, rows, summary, studies

    with gr.Blocks(title="MVCM — multi-view chest study demo", analytics_enabled=False) as demo:
        gr.Markdown(f"# MVCM multi-view study viewer\n{DISCLAIMER}")
        studies_state = gr.State([])
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label="Study files (DICOM, PNG, JPEG)", file_count="multiple")
                preset = gr.Dropdown(["file"] + list(PERCENTILE_PRESETS), value="file", label="Window")
                summary = gr.Markdown()
            with gr.Column(scale=2):
                gallery = gr.Gallery(label="Views", format="png", columns=2, height=480)
        status = gr.Dataframe(headers=handlers.STATUS_COLUMNS, label="Files", interactive=False)
        if predictor is None:
            gr.Markdown("_No model loaded: question answering and retrieval are not available yet._")
        files.change(on_upload, [files, preset], [gallery, status, summary, studies_state], api_name="load_study")
        preset.change(lambda s, p: handlers.gallery_items(s[0], p) if s else [], [studies_state, preset], gallery,
                      api_name=False)
    return demo


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags and launch the app."""
    parser = argparse.ArgumentParser(description="Start the MVCM Gradio app.")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    args = parser.parse_args(argv)
    demo = build_demo(None)
    demo.queue(default_concurrency_limit=1, max_size=16)
    demo.launch(server_name=args.host, server_port=args.port, share=False, max_file_size="50mb",
                show_error=False)
    return 0
