"""The VQA head's region pooling: where a finding is reaches the classifier."""

from __future__ import annotations

import pytest
import torch

from mvcm_core.models.vqa import VQAHead, region_weights


def test_region_weights_split_each_views_cells_into_a_grid_and_skip_the_prefix():
    weights = region_weights(views=2, prefix=1, grid=4, regions=2)  # 2 views × (1 + 16) tokens
    assert weights.shape == (8, 34) and weights.sum(1).tolist() == [4.0] * 8
    assert weights[:, [0, 17]].sum() == 0  # the pooled / [CLS] tokens are in no region
    assert (weights[0] > 0).nonzero().flatten().tolist() == [1, 2, 5, 6]  # view 0, upper-left 2×2 cells
    assert (weights[7] > 0).nonzero().flatten().tolist() == [28, 29, 32, 33]  # view 1, lower-right
    with pytest.raises(ValueError, match="cannot be split"):
        region_weights(views=1, prefix=1, grid=5, regions=2)


def test_only_the_region_pooled_head_tells_a_finding_on_the_left_from_one_on_the_right():
    torch.manual_seed(0)
    width, grid = 8, 4
    text = torch.randn(1, 3, width)
    left, right = torch.zeros(1, 1 + grid * grid, width), torch.zeros(1, 1 + grid * grid, width)
    finding = torch.randn(width)
    left[0, 1 + 8], right[0, 1 + 11] = finding, finding  # the same cell feature in row 2, column 0 or 3
    for regions, tells in ((None, False), (region_weights(1, 1, grid, 2), True)):
        head = VQAHead(width, 3, heads=2, gca=False, regions=regions)
        same = torch.allclose(head(text, None, left, None), head(text, None, right, None))
        assert same is not tells
    masked = torch.ones(1, 1 + grid * grid, dtype=torch.bool)
    masked[0, 1 + 11] = False  # a masked token counts in no region mean
    head = VQAHead(width, 3, heads=2, gca=False, regions=region_weights(1, 1, grid, 2))
    assert torch.allclose(head(text, None, right, masked), head(text, None, torch.zeros_like(right), masked))
