"""Prepacked oneDNN weights (bf16): the same products as the plain modules, activations fused, the tower intact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mvcm_core.prepack import PackedLinear, fold_batch_norms, pack_linears, pack_resnet, prepack_supported

pytestmark = pytest.mark.skipif(not prepack_supported(torch.bfloat16), reason="no oneDNN bf16 kernels here")


class Intermediate(nn.Module):
    """The shape of a BERT intermediate block: ``dense`` then ``intermediate_act_fn``."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(8, 16)
        self.intermediate_act_fn = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(x))


def test_packed_linears_compute_the_same_and_fuse_the_gelu_after_them():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 8), nn.GELU(approximate="tanh"),
                          Intermediate()).to(torch.bfloat16).eval()
    x = torch.randn(3, 5, 8, dtype=torch.bfloat16)  # a batch of sequences: [B, T, D]
    with torch.inference_mode():
        expected = model(x)
        assert pack_linears(model) == 3
        got = model(x)
    assert isinstance(model[0], PackedLinear) and model[0].activation == "gelu" and isinstance(model[1], nn.Identity)
    assert model[2].activation == "none" and isinstance(model[3], nn.GELU)  # a tanh GELU is not fused
    assert model[4].dense.activation == "gelu" and isinstance(model[4].intermediate_act_fn, nn.Identity)
    assert got.shape == expected.shape
    assert torch.allclose(got.float(), expected.float(), atol=2e-2, rtol=2e-2)  # a bf16 place at most


def test_a_packed_resnet_tower_gives_the_same_feature_maps():
    import timm

    torch.manual_seed(0)
    trunk = timm.create_model("resnet18", num_classes=0, in_chans=1, channels=[8, 8, 16, 16], stem_width=8,
                              output_stride=16).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so that folding matters
        for module in trunk.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    fold_batch_norms(trunk)
    trunk = trunk.to(torch.bfloat16).to(memory_format=torch.channels_last)
    x = torch.randn(2, 1, 64, 64, dtype=torch.bfloat16)
    with torch.inference_mode():
        expected = trunk.forward_features(x)
        assert pack_resnet(trunk)
        got = trunk.forward_features(x)
    assert got.shape == expected.shape == (2, 16, 4, 4)
    scale = expected.float().abs().max()
    assert (got.float() - expected.float()).abs().max() <= 0.03 * scale  # fused residual adds round once less
    assert not pack_resnet(nn.Sequential(nn.Conv2d(1, 1, 1)))  # not a ResNet: left as it was
