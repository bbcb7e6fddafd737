"""The MVCM Gradio app: ``build_demo`` lays out and wires; ``handlers`` holds the behaviour."""
