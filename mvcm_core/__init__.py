"""MVCM core library: DICOM study ingestion, models, losses, data readers and inference.

Imports point one way: ``training`` and ``demo`` import ``mvcm_core``; the core never imports them.
Heavy dependencies (torch, transformers) are imported lazily by the submodules that need them, so
``import mvcm_core`` and the DICOM tools stay fast.
"""

from mvcm_core.version import __version__

__all__ = ["__version__"]
