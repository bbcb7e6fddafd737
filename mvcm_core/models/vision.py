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


class ConvStem(nn.Sequential):
    """Stride-2 3x3 convolutions (GroupNorm, GELU) then a 1x1 projection: a ViT stem of total stride 2^n.

    Xiao et al. 2021, "Early convolutions help transformers see better": trains faster and more
    stably than the 16x16 patchify convolution, which matters for ViTs trained from scratch.
    """

    def __init__(self, in_chans: int, widths: list[int], embed_dim: int) -> None:
        layers: list[nn.Module] = []
        for width_in, width_out in zip([in_chans, *widths[:-1]], widths):
            layers += [nn.Conv2d(width_in, width_out, 3, stride=2, padding=1, bias=False),
                       nn.GroupNorm(1, width_out), nn.GELU()]
        layers.append(nn.Conv2d(widths[-1], embed_dim, 1))
        super().__init__(*layers)


def is_vit_name(timm_name: str) -> bool:
    """Whether a timm model name is a vision transformer (patch tokens, a [CLS] token, blocks)."""
    return "vit" in timm_name or "deit" in timm_name


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
        self.is_vit = is_vit_name(cfg.timm_name)
        self.conv_stem = bool(cfg.conv_stem)
        if self.conv_stem and not self.is_vit:
            raise ValueError("vision.conv_stem replaces a ViT's patch embedding; this encoder is not a ViT")
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
            if cfg.conv_stem:
                if 2 ** len(cfg.conv_stem) != self.patch_size:
                    raise ValueError(f"vision.conv_stem needs log2(patch size) = "
                                     f"{self.patch_size.bit_length() - 1} layers, got {len(cfg.conv_stem)}")
                self.trunk.patch_embed.proj = ConvStem(cfg.in_chans, list(cfg.conv_stem), self.trunk.embed_dim)
        else:  # a CNN's final feature-map cells play the patches (total stride from timm's feature_info)
            self.patch_size = int(self.trunk.feature_info[-1]["reduction"])
            if cfg.image_size % self.patch_size:
                raise ValueError(f"vision.image_size {cfg.image_size} is not a multiple of the encoder's "
                                 f"stride {self.patch_size}")
            self.num_patches = (cfg.image_size // self.patch_size) ** 2
            # CNN cells carry no position of their own (left / right needs it): a learned one per cell
            self.cell_positions = nn.Parameter(torch.zeros(1, self.num_patches, self.width))
            nn.init.trunc_normal_(self.cell_positions, std=0.02)
        self._set_trainable(cfg)

    def _set_trainable(self, cfg: VisionCfg) -> None:
        self.frozen = cfg.trainable == "frozen"
        if cfg.trainable == "full":
            return
        for parameter in self.parameters():
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

    def train(self, mode: bool = True) -> ImageEncoder:
        """A frozen trunk stays in eval mode, so its batch-norm statistics never move."""
        super().train(mode)
        if self.frozen:
            self.trunk.eval()
        return self

    def forward(self, images: torch.Tensor, keep_ids: torch.Tensor | None = None) -> torch.Tensor:
        if not self.is_vit:
            if keep_ids is not None:
                raise ValueError("patch masking needs a ViT image encoder")
            features = self.trunk.forward_features(images)  # [M, D, h, w]
            cells = features.flatten(2).transpose(1, 2)  # [M, D, h, w] -> [M, h*w, D]
            cells = cells + self.cell_positions.to(cells.dtype)  # each cell its position
            return torch.cat([cells.mean(dim=1, keepdim=True), cells], dim=1)
        if keep_ids is None:
            return self.trunk.forward_features(images)  # [M, prefix + N, D]
        trunk = self.trunk
        if self.conv_stem:
            images = images * self.pixel_keep_mask(keep_ids, images.shape[-2:])  # dropped patches leak nothing
        tokens = trunk._pos_embed(trunk.patch_embed(images))  # [M, prefix + N, D]
        prefix, patches = tokens[:, : self.num_prefix_tokens], tokens[:, self.num_prefix_tokens:]
        index = keep_ids.unsqueeze(-1).expand(-1, -1, patches.shape[-1])  # [M, K] -> [M, K, D]
        tokens = torch.cat([prefix, torch.gather(patches, 1, index)], dim=1)  # [M, prefix + K, D]
        tokens = trunk.norm_pre(trunk.patch_drop(tokens))
        return trunk.norm(trunk.blocks(tokens))

    def pixel_keep_mask(self, keep_ids: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """``[M, 1, H, W]`` of 1 on the kept patches' pixels and 0 elsewhere."""
        grid_h, grid_w = size[0] // self.patch_size, size[1] // self.patch_size
        keep = torch.zeros(keep_ids.shape[0], grid_h * grid_w, device=keep_ids.device)
        keep.scatter_(1, keep_ids, 1.0)
        keep = keep.view(-1, 1, grid_h, grid_w)  # [M, N] -> [M, 1, gh, gw]
        return keep.repeat_interleave(self.patch_size, 2).repeat_interleave(self.patch_size, 3)

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """``[M, C, H, W] -> [M, N, p*p*C]`` in the patch order of the encoder."""
        m, c, h, w = images.shape
        p = self.patch_size
        grid = images.reshape(m, c, h // p, p, w // p, p)  # [M, C, gh, p, gw, p]
        return grid.permute(0, 2, 4, 3, 5, 1).reshape(m, (h // p) * (w // p), p * p * c)  # [M, N, p*p*C]
