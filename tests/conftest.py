"""Shared fixtures: the real DICOM corpus and synthetic radiographs written by the tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture(scope="session")
def pydicom_test_dir() -> Path:
    """pydicom's own test files."""
    import pydicom

    return Path(pydicom.__file__).parent / "data" / "test_files"


@pytest.fixture(scope="session")
def pydicom_data_dir() -> Path:
    """The pydicom-data corpus (RG1_* chest PA and more)."""
    data_store = pytest.importorskip("data_store", reason="pydicom-data is a dev dependency")
    return Path(data_store.__file__).parent / "data"


def chest_like(rows: int = 96, cols: int = 80, seed: int = 0, bits: int = 12) -> np.ndarray:
    """A crude frontal chest in MONOCHROME2 stored values: dark lungs, bright mediastinum, noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols]
    high = 2**bits - 1
    image = np.full((rows, cols), 0.55 * high)
    for centre in (0.3, 0.7):  # two lungs
        inside = ((x / cols - centre) / 0.17) ** 2 + ((y / rows - 0.5) / 0.33) ** 2 < 1
        image[inside] = 0.2 * high
    image[np.abs(x / cols - 0.5) < 0.08] = 0.8 * high  # mediastinum and spine
    image += rng.normal(0, 0.01 * high, image.shape)
    return np.clip(image, 0, high).astype(np.uint16)


TINY_OVERRIDES = {
    "vision": {"image_size": 32, "timm_kwargs": {"depth": 1, "embed_dim": 32, "num_heads": 2}},
    "text": {"pretrained": False, "max_length": 16,
             "config_overrides": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                  "intermediate_size": 64}},
    "fusion": {"width": 32, "layers": 1, "heads": 2, "memory_slots": 4},
    "heads": {"embed_dim": 16, "token_dim": 16, "mim_decoder_width": 32},
    "preprocess": {"image_size": 32},
}


@pytest.fixture()
def tiny_model():
    """A randomly initialised, very small MVCM (text encoder architecture from MiniLM's config)."""
    import torch

    from mvcm_core.factory import create_model

    torch.manual_seed(0)
    return create_model("mvcm-tiny", TINY_OVERRIDES)


def random_batch(cfg, batch: int = 4, length: int = 12, seed: int = 0):
    """A batch dict in the model's contract with random content."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    size, views = cfg.preprocess.image_size, cfg.vision.max_views
    return {
        "images": torch.randn(batch, views, cfg.vision.in_chans, size, size, generator=generator),
        "view_ids": torch.tensor([[0, 1]] * batch),
        "view_mask": torch.tensor([[True, True]] * (batch - 1) + [[True, False]]),
        "input_ids": torch.randint(1000, 5000, (batch, length), generator=generator),
        "attention_mask": torch.ones(batch, length, dtype=torch.long),
    }
