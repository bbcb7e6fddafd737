"""Image encoder: any timm model, applied to every view; ViTs can encode visible patches only."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mvcm_core.config import VisionCfg
from mvcm_core.models.adapters import insert_adapters


def _pretrained_kwargs(pretrained: bool | str) -> dict:
    """timm arguments for no weights, Hub weights, or a local file / folder of weights."""
    if pretrained is False or pretrained is None:
        return {"pretrained": False}
    if pretrained is True:
        return {"pretrained": True}
    path = Path(pretrained)
    if path.is_dir():
        candidates = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")) + sorted(path.glob("*.pth"))
        if not candidates:
            raise FileNotFoundError(f"no weights file in {path}")
        path = candidates[0]
    if not path.is_file():
        raise FileNotFoundError(f"image encoder weights not found: {path}")
    return {"pretrained": True, "pretrained_cfg_overlay": {"file": str(path)}}


class ImageEncoder(nn.Module):
    """Per-view token encoder.

    ``forward(images [M, C, H, W], keep_ids [M, K] | None) -> tokens [M, prefix + K, D]``: for a ViT
    the first token is the [CLS] token and the rest are the kept patch tokens; for a CNN the first
    token is the pooled feature and the rest are the final feature-map cells.
    """

    def __init__(self, cfg: VisionCfg) -> None:
        super().__init__()
        import timm

        kwargs = dict(cfg.timm_kwargs)
        self.is_vit = "vit" in cfg.timm_name or "deit" in cfg.timm_name
        if self.is_vit:
            kwargs.setdefault("img_size", cfg.image_size)
            kwargs.setdefault("dynamic_img_size", False)
        self.trunk = timm.create_model(cfg.timm_name, num_classes=0, in_chans=cfg.in_chans,
                                       **_pretrained_kwargs(cfg.pretrained), **kwargs)
        self.width: int = self.trunk.num_features
        self.num_prefix_tokens: int = getattr(self.trunk, "num_prefix_tokens", 1) if self.is_vit else 1
        if self.is_vit:
            grid = self.trunk.patch_embed.grid_size
            self.num_patches: int = grid[0] * grid[1]
            self.patch_size: int = self.trunk.patch_embed.patch_size[0]
        else:
            self.num_patches, self.patch_size = 0, 0
        self._set_trainable(cfg)

    def _set_trainable(self, cfg: VisionCfg) -> None:
        if cfg.trainable == "full":
            return
        for parameter in self.trunk.parameters():
            parameter.requires_grad = False
        if cfg.trainable == "adapters":
            if not self.is_vit:
                raise ValueError("vision adapters need a ViT")
            paths = [f"blocks.{i}.{leaf}" for i in range(len(self.trunk.blocks)) for leaf in ("attn.proj", "mlp.fc2")]
            insert_adapters(self.trunk, paths, max(16, self.width // 4))
            for name, parameter in self.trunk.named_parameters():
                if "adapter" in name or "norm" in name or "cls_token" in name:
                    parameter.requires_grad = True
        elif cfg.trainable != "frozen":
            raise ValueError(f"vision.trainable must be full, frozen or adapters, got {cfg.trainable!r}")

    def forward(self, images: torch.Tensor, keep_ids: torch.Tensor | None = None) -> torch.Tensor:
        if not self.is_vit:
            if keep_ids is not None:
                raise ValueError("patch masking needs a ViT image encoder")
            features = self.trunk.forward_features(images)  # [M, D, h, w]
            cells = features.flatten(2).transpose(1, 2)  # [M, D, h, w] -> [M, h*w, D]
            return torch.cat([cells.mean(dim=1, keepdim=True), cells], dim=1)
        if keep_ids is None:
            return self.trunk.forward_features(images)  # [M, prefix + N, D]
        trunk = self.trunk
        tokens = trunk._pos_embed(trunk.patch_embed(images))  # [M, prefix + N, D]
        prefix, patches = tokens[:, : self.num_prefix_tokens], tokens[:, self.num_prefix_tokens:]
        index = keep_ids.unsqueeze(-1).expand(-1, -1, patches.shape[-1])  # [M, K] -> [M, K, D]
        tokens = torch.cat([prefix, torch.gather(patches, 1, index)], dim=1)  # [M, prefix + K, D]
        tokens = trunk.norm_pre(trunk.patch_drop(tokens))
        return trunk.norm(trunk.blocks(tokens))

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """``[M, C, H, W] -> [M, N, p*p*C]`` in the patch order of the encoder."""
        m, c, h, w = images.shape
        p = self.patch_size
        grid = images.reshape(m, c, h // p, p, w // p, p)  # [M, C, gh, p, gw, p]
        return grid.permute(0, 2, 4, 3, 5, 1).reshape(m, (h // p) * (w // p), p * p * c)  # [M, N, p*p*C]
