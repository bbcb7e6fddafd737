"""Prepacked oneDNN weights for the bf16 inference path: fewer, fused operations at small sizes.

A plain ``nn.Linear`` or ``nn.Conv2d`` hands oneDNN a weight in PyTorch's layout, and oneDNN reorders
it into its blocked layout on every call. At a request's sizes (a 12-token question, 8 × 8 feature
maps) that reorder costs as much as the arithmetic (``PERFORMANCE.md``). Here the weights are
reordered once, when the optimised path is built, and the activation that follows is fused into the
same call: GELU after a linear layer, and ReLU, or the residual add then ReLU, after a convolution.
Inductor's ``freezing`` does the same, but needs a compile at every start; this needs none.

Only for bf16 on a CPU whose oneDNN has these kernels (:func:`prepack_supported`); every other case
keeps the plain modules. The packed path computes the same products; only the rounding of a fused
residual add can differ in the last bf16 place.

Also here, for a convolutional tower in any precision: batch norms folded into their convolutions
(:func:`fold_batch_norms`) and channels-last outputs from the one-channel stem (:func:`keep_channels_last`).
"""

from __future__ import annotations

import types

import torch
from torch import nn


def prepack_supported(dtype: torch.dtype) -> bool:
    """True when bf16 weights can be prepacked here (oneDNN with the pointwise-fused kernels)."""
    ops = torch.ops.mkldnn
    return (dtype == torch.bfloat16 and torch.backends.mkldnn.is_available()
            and all(hasattr(ops, name) for name in ("_linear_pointwise", "_reorder_linear_weight",
                                                    "_convolution_pointwise")))


class PackedLinear(nn.Module):
    """A linear layer whose weight oneDNN reordered once, optionally fused with the GELU after it."""

    def __init__(self, linear: nn.Linear, activation: str = "none", rows_hint: int = 16) -> None:
        super().__init__()
        self.in_features, self.out_features, self.activation = linear.in_features, linear.out_features, activation
        weight = linear.weight.detach()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, rows_hint)
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.algorithm = "none" if activation == "gelu" else ""  # exact (erf) GELU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, self.activation, [], self.algorithm)


def _exact_gelu(module: nn.Module) -> bool:
    """``nn.GELU()`` or transformers' ``GELUActivation`` computing the exact (erf) GELU."""
    if isinstance(module, nn.GELU):
        return module.approximate == "none"
    return type(module).__name__ == "GELUActivation" and getattr(module, "act", None) is nn.functional.gelu


def pack_linears(root: nn.Module, rows_hint: int = 16) -> int:
    """Replace every ``nn.Linear`` under ``root`` by a :class:`PackedLinear`, in place; returns how many.

    A GELU that directly follows (the next module of an ``nn.Sequential``, or a BERT intermediate's
    activation) is fused and replaced by ``nn.Identity``.
    """
    packed = 0
    for parent in list(root.modules()):
        children = list(parent._modules.items())
        for position, (name, child) in enumerate(children):
            if not isinstance(child, nn.Linear):
                continue
            activation = "none"
            if isinstance(parent, nn.Sequential) and position + 1 < len(children) and _exact_gelu(children[position + 1][1]):
                parent._modules[children[position + 1][0]] = nn.Identity()
                activation = "gelu"
            elif name == "dense" and _exact_gelu(getattr(parent, "intermediate_act_fn", None)):
                parent.intermediate_act_fn = nn.Identity()
                activation = "gelu"
            parent._modules[name] = PackedLinear(child, activation, rows_hint)
            packed += 1
    return packed


class PackedConv:
    """A convolution (its batch norm already folded) with its weight reordered once for oneDNN."""

    def __init__(self, conv: nn.Conv2d) -> None:
        if not isinstance(conv, nn.Conv2d) or isinstance(conv.padding, str):
            raise TypeError(f"cannot pack {type(conv).__name__}")
        self.args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        self.weight = torch._C._nn.mkldnn_reorder_conv2d_weight(conv.weight.detach().to_mkldnn(), *self.args, None)
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels, dtype=conv.weight.dtype)
        self.bias = bias

    def __call__(self, x: torch.Tensor, activation: str = "none") -> torch.Tensor:
        return torch.ops.mkldnn._convolution_pointwise(x, self.weight, self.bias, *self.args, activation, [None], "")

    def add_relu(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``relu(conv(x) + residual)`` in one call."""
        return torch.ops.mkldnn._convolution_pointwise.binary(x, residual, self.weight, self.bias, *self.args,
                                                              "add", None, "relu", [None], "")


def _plain(module: nn.Module | None) -> bool:
    return module is None or isinstance(module, nn.Identity)


def _basic_block(block: nn.Module) -> tuple[PackedConv, PackedConv, PackedConv | None] | None:
    """The packed convolutions of a timm ``BasicBlock`` whose batch norms are folded, or None."""
    if type(block).__name__ != "BasicBlock" or not all(
            _plain(getattr(block, name, None)) for name in ("bn1", "bn2", "drop_block", "aa", "se", "drop_path")):
        return None
    if not (isinstance(block.act1, nn.ReLU) and isinstance(block.act2, nn.ReLU)):
        return None
    shortcut = None
    if block.downsample is not None:
        layers = [m for m in block.downsample if not isinstance(m, nn.Identity)]
        if len(layers) != 1 or not isinstance(layers[0], nn.Conv2d):
            return None
        shortcut = PackedConv(layers[0])
    return PackedConv(block.conv1), PackedConv(block.conv2), shortcut


def pack_resnet(trunk: nn.Module) -> bool:
    """Give a timm ResNet of BasicBlocks (batch norms folded) a packed ``forward_features``; False if not one."""
    stem_ok = (isinstance(getattr(trunk, "conv1", None), nn.Conv2d) and _plain(getattr(trunk, "bn1", None))
               and isinstance(getattr(trunk, "act1", None), nn.ReLU))
    layers = [getattr(trunk, f"layer{i}", None) for i in range(1, 5)]
    if not stem_ok or any(layer is None for layer in layers):
        return False
    blocks = [_basic_block(block) for layer in layers for block in layer]
    if any(block is None for block in blocks):
        return False
    stem, pool = PackedConv(trunk.conv1), trunk.maxpool

    def forward_features(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = pool(stem(x.contiguous(memory_format=torch.channels_last), "relu"))  # [N, C, H, W], channels-last
        for first, second, shortcut in blocks:
            residual = x if shortcut is None else shortcut(x)
            x = second.add_relu(first(x, "relu"), residual)
        return x

    trunk.forward_features = types.MethodType(forward_features, trunk)
    return True


def fold_batch_norms(module: torch.nn.Module) -> int:
    """Fold every eval-mode ``BatchNorm2d`` into the ``Conv2d`` before it, in place; returns how many.

    Pairs are a ``bnK`` child with its ``convK`` sibling (timm's ResNet stem and blocks) and a batch
    norm right after a convolution inside an ``nn.Sequential`` (the downsample branch).
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for parent in list(module.modules()):
        children = list(parent._modules.items())
        for position, (name, child) in enumerate(children):
            if not isinstance(child, torch.nn.BatchNorm2d) or child.training:
                continue
            if name.startswith("bn") and isinstance(parent._modules.get("conv" + name[2:]), torch.nn.Conv2d):
                conv_name = "conv" + name[2:]
            elif isinstance(parent, torch.nn.Sequential) and position and isinstance(children[position - 1][1],
                                                                                     torch.nn.Conv2d):
                conv_name = children[position - 1][0]
            else:
                continue
            parent._modules[conv_name] = fuse_conv_bn_eval(parent._modules[conv_name], child)
            parent._modules[name] = torch.nn.Identity()
            folded += 1
    return folded


def keep_channels_last(module: torch.nn.Module) -> None:
    """Make convolutions on one-channel inputs return channels-last maps.

    A ``[N, 1, H, W]`` tensor is contiguous in both layouts, so oneDNN keeps the stem's output in NCHW
    and every later layer runs there (PyTorch's NCHW max-pool alone: 1.5 ms against 0.13 ms).
    """
    def to_channels_last(_module: torch.nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return output.contiguous(memory_format=torch.channels_last)

    for layer in module.modules():
        if isinstance(layer, torch.nn.Conv2d) and layer.in_channels == 1:
            layer.register_forward_hook(to_channels_last)
