"""Hugging Face Spaces entry point: the MVCM teaching demo (layout and wiring in demo/app.py)."""

import sys

from demo.app import main

if __name__ == "__main__":
    sys.exit(main([]))  # reads GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (set by Spaces) and MVCM_CHECKPOINT
