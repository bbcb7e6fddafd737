"""Training entry points (pretraining, fine-tuning, evaluation, building the served checkpoint).

Each is a thin ``main(argv)`` over :mod:`mvcm_core`; imports go training → mvcm_core only.
"""
