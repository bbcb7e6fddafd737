"""Position targets (side from the frontal, depth from the lateral): targets, cell score maps, loss, training."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import random_batch
from test_cnn_tower import CNN_OVERRIDES

from mvcm_core.data.positions import DEPTH_TERMS, SIDE_TERMS, depth_targets, side_targets
from mvcm_core.factory import create_model
from mvcm_core.losses import PositionsLoss, create_loss
from mvcm_core.models.heads import CellScoreHead
from mvcm_core.objective import PretrainTask


def _slot(terms: tuple[str, ...], term: str) -> int:
    return 2 * terms.index(term)


def test_side_targets_prefer_the_placements_and_mask_an_open_side():
    findings = [{"term": "opacity", "side": "bilateral"}, {"term": "pleural effusion", "side": "bilateral"},
                {"term": "atelectasis", "side": None}, {"term": "nodule", "side": "left"}]
    depths = [{"term": "opacity", "side": "right", "depth": 0.5}]  # the phantom put it on the right only
    targets, mask = side_targets(findings, depths)
    opacity, effusion = _slot(SIDE_TERMS, "opacity"), _slot(SIDE_TERMS, "pleural effusion")
    atelectasis, nodule, mass = (_slot(SIDE_TERMS, t) for t in ("atelectasis", "nodule", "mass"))
    assert targets[opacity: opacity + 2] == [0.0, 1.0]
    assert targets[effusion: effusion + 2] == [1.0, 1.0]  # bilateral is both sides
    assert mask[atelectasis: atelectasis + 2] == [0.0, 0.0]  # present, side unknown
    assert targets[nodule: nodule + 2] == [1.0, 0.0] and mask[nodule: nodule + 2] == [1.0, 1.0]
    assert targets[mass: mass + 2] == [0.0, 0.0] and mask[mass: mass + 2] == [1.0, 1.0]  # absent: a known 0
    assert len(targets) == len(mask) == 2 * len(SIDE_TERMS)


def test_depth_targets_call_only_what_lies_clear_of_the_middle():
    findings = [{"term": "opacity", "side": "left"}, {"term": "nodule", "side": "right"},
                {"term": "mass", "side": "right"}]
    depths = [{"term": "opacity", "side": "left", "depth": -0.6}, {"term": "opacity", "side": "left", "depth": 0.1},
              {"term": "nodule", "side": "right", "depth": 0.3}]
    targets, mask = depth_targets(findings, depths)
    opacity, nodule, mass = (_slot(DEPTH_TERMS, t) for t in DEPTH_TERMS)
    assert targets[opacity: opacity + 2] == [1.0, 0.0] and mask[opacity: opacity + 2] == [1.0, 0.0]  # 0.1: maybe
    assert targets[nodule: nodule + 2] == [0.0, 1.0] and mask[nodule: nodule + 2] == [1.0, 1.0]
    assert mask[mass: mass + 2] == [0.0, 0.0]  # reported, never placed with a depth
    assert depth_targets([], None) == ([0.0] * 6, [1.0] * 6)  # nothing there: known zeros


def test_a_cell_score_head_reads_where_its_weights_look():
    head = CellScoreHead(dim=4, classes=2, cells=3)
    cells = torch.randn(5, 3, 4)
    with torch.no_grad():
        assert torch.allclose(head(cells), head.score(cells).mean(dim=1), atol=1e-6)  # uniform at first
        head.where.data[:, 1] = torch.tensor([-50.0, 50.0, -50.0])  # class 1 looks at cell 1 only
        assert torch.allclose(head(cells)[:, 1], head.score(cells[:, 1])[:, 1], atol=1e-5)


def test_the_loss_ignores_masked_entries_and_rows_without_the_view():
    loss = create_loss("positions")
    assert isinstance(loss, PositionsLoss)
    side, depth = torch.randn(3, 4), torch.randn(3, 2)
    side_t, depth_t = torch.randint(0, 2, (3, 4)).float(), torch.randint(0, 2, (3, 2)).float()
    side_m, depth_m = torch.ones(3, 4), torch.ones(3, 2)
    side_m[0, 1] = 0.0
    valid_side, valid_depth = torch.tensor([True, True, True]), torch.tensor([True, False, True])
    base = loss(side, side_t, side_m, valid_side, depth, depth_t, depth_m, valid_depth)["positions_loss"]
    moved_side, moved_depth = side.clone(), depth.clone()
    moved_side[0, 1] += 9.0  # a masked entry
    moved_depth[1] += 9.0  # a row whose lateral view is missing
    again = loss(moved_side, side_t, side_m, valid_side, moved_depth, depth_t, depth_m, valid_depth)
    assert torch.allclose(base, again["positions_loss"])
    moved_side[1, 0] += 9.0  # a known entry does count
    assert not torch.allclose(base, loss(moved_side, side_t, side_m, valid_side, depth, depth_t, depth_m,
                                         valid_depth)["positions_loss"])
    with pytest.raises(ValueError, match="differ"):
        loss(side, side_t[:, :2], side_m, valid_side, depth, depth_t, depth_m, valid_depth)


def test_the_objective_trains_the_tower_through_the_position_heads():
    overrides = copy.deepcopy(CNN_OVERRIDES)
    overrides["heads"] = {**overrides.get("heads", {}), "position_heads": True}
    model = create_model("mvcm-tiny-cnn", overrides).train()
    batch = random_batch(model.cfg, batch=3)
    batch["view_ids"][1] = torch.tensor([1, 0])  # slots in the wrong order: neither head may read them
    for name, count in (("side", 2 * len(SIDE_TERMS)), ("depth", 2 * len(DEPTH_TERMS))):
        batch[f"{name}_targets"] = torch.randint(0, 2, (3, count)).float()
        batch[f"{name}_mask"] = torch.ones(3, count)
    task = PretrainTask(model, {"positions": {"weight": 1.0}})
    terms = task(batch)
    out = model.encode_study(batch["images"], batch["view_ids"], batch["view_mask"])
    assert out["side_valid"].tolist() == [True, False, True] and out["depth_valid"].tolist() == [True, False, False]
    terms["loss"].backward()
    assert model.side_head.score.weight.grad.abs().sum() > 0 and model.depth_head.where.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.vision.trunk.parameters())
    with pytest.raises(ValueError, match="position heads"):
        PretrainTask(create_model("mvcm-tiny-cnn", CNN_OVERRIDES), {"positions": {"weight": 1.0}})
    single = copy.deepcopy(overrides)
    single["vision"]["max_views"] = 1
    with pytest.raises(ValueError, match="max_views"):
        create_model("mvcm-tiny-cnn", single)


def test_the_trunk_probe_labels_only_what_lies_clearly_on_one_side():
    from training.probe_trunk import position_labels

    row = {"findings": [{"term": "opacity", "side": "left"}],
           "depths": [{"term": "opacity", "side": "left", "depth": 0.7}]}
    assert position_labels(row, "opacity") == (1.0, 0.0)  # posterior, not right
    both = {"findings": [{"term": "opacity", "side": "bilateral"}],
            "depths": [{"term": "opacity", "side": "left", "depth": 0.7}, {"term": "opacity", "side": "right",
                                                                          "depth": -0.1}]}
    assert position_labels(both, "opacity") == (None, None)  # both sides, and one placement mid-lung
    assert position_labels({"findings": [], "depths": []}, "opacity") == (None, None)


def test_the_trunk_probe_pools_each_views_cells_over_quadrants():
    import numpy as np

    from training.probe_trunk import quadrant_features

    overrides = copy.deepcopy(CNN_OVERRIDES)
    overrides["vision"]["image_size"] = overrides["preprocess"]["image_size"] = 64  # a 4 x 4 grid of cells
    overrides["heads"] = {**overrides.get("heads", {}), "position_heads": True}
    model = create_model("mvcm-tiny-cnn", overrides).eval()

    class Store:
        def views(self, index):
            rng = np.random.default_rng(index)
            return [rng.integers(0, 255, (64, 64), dtype=np.uint8) for _ in range(2)], ["PA", "LATERAL"]

    features, heads = quadrant_features(model, Store(), [0, 1, 2], batch_size=2)
    width = model.vision.width
    assert features.shape == (3, 2, 4 * width) and set(heads) == {"side_logits", "depth_logits"}
    from mvcm_core.data.batching import image_batch

    views, labels = Store().views(2)
    batch = image_batch([views], [labels], model.cfg)
    with torch.no_grad():
        tokens = model.encode_study(batch["images"], batch["view_ids"], batch["view_mask"])["view_tokens"]
    lateral = tokens[1, 1:].view(4, 4, width)  # [N, D] -> [rows, columns, D]
    top_right = lateral[:2, 2:].mean(dim=(0, 1))  # quadrant (0, 1)
    assert np.allclose(features[2, 1, width: 2 * width], top_right.numpy(), atol=1e-5)
