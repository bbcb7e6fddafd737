"""Models: image / text encoders, adapters, co-attention fusion, heads and the MVCM model.

Models never import :mod:`mvcm_core.losses` or :mod:`mvcm_core.data`.
"""
