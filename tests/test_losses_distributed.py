"""Two gloo processes on CPU give the single-process loss and gradients of the global batch.

Rank 0 holds 3 samples and rank 1 holds 2 (uneven on purpose: the last batch of an epoch), with an
invalid sample and a duplicate-report group that spans both ranks. Every rank computes the loss of the
global batch; parameter gradients are averaged across ranks by DistributedDataParallel, and a rank's
own input gradient is ``world_size`` times the single-process one (see ``mvcm_core/losses/distributed.py``).
"""

from __future__ import annotations

import datetime
import gc
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from mvcm_core.losses import ContrastiveLoss, PrototypeLoss, SoftLabelContrastiveLoss, sinkhorn_knopp

WORLD = 2
SPLITS = [3, 2]
VALID = torch.tensor([True, True, False, True, True])
GROUPS = torch.tensor([0, 1, 0, 2, 3])  # samples 0 and 2 share a report, and sample 2 is invalid
GROUPS_ACROSS = torch.tensor([0, 1, 2, 0, 3])  # samples 0 (rank 0) and 3 (rank 1) share a report


def global_batch() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "x": torch.randn(5, 6, generator=gen),
        "text": torch.randn(5, 4, generator=gen),
        "teacher_a": torch.randn(5, 3, generator=gen),
        "teacher_b": torch.randn(5, 3, generator=gen),
        "labels": (torch.rand(5, 7, generator=gen) > 0.6).float(),
    }


def projection() -> nn.Linear:
    torch.manual_seed(1)
    return nn.Linear(6, 4)


def run_losses(batch: dict[str, torch.Tensor], rows: slice, model: nn.Module) -> dict[str, torch.Tensor]:
    """Every loss on ``batch[rows]``: values, input gradients and the projection's gradient."""
    results = {}
    losses = {
        "itc": lambda i, t, s, r: ContrastiveLoss(label_smoothing=0.1)(
            i, t, s, valid=VALID[r], positive_groups=GROUPS_ACROSS[r])["itc_loss"],
        "itc_groups_masked": lambda i, t, s, r: ContrastiveLoss()(
            i, t, s, valid=VALID[r], positive_groups=GROUPS[r])["itc_loss"],
        "soft_embed": lambda i, t, s, r: SoftLabelContrastiveLoss(teacher_scale=4.0)(
            i, t, s, teacher_a=batch["teacher_a"][r], teacher_b=batch["teacher_b"][r], valid=VALID[r]
            )["soft_itc_loss"],
        "soft_labels": lambda i, t, s, r: SoftLabelContrastiveLoss(name="soft_intra_text")(
            i, t, s, teacher_labels=batch["labels"][r])["soft_intra_text_loss"],
    }
    for name, loss_fn in losses.items():
        model.zero_grad()
        text = batch["text"][rows].clone().requires_grad_()
        scale = torch.tensor(5.0, requires_grad=True)
        image = F.normalize(model(batch["x"][rows]), dim=-1)
        value = loss_fn(image, F.normalize(text, dim=-1), scale, rows)
        value.backward()
        weight = model.module.weight if hasattr(model, "module") else model.weight
        results.update({f"{name}/loss": value.detach(), f"{name}/text_grad": text.grad,
                        f"{name}/scale_grad": scale.grad, f"{name}/weight_grad": weight.grad.clone()})
    return results


def run_prototypes(batch: dict[str, torch.Tensor], rows: slice) -> dict[str, torch.Tensor]:
    loss = PrototypeLoss(num_prototypes=3, embed_dim=4)
    torch.manual_seed(2)
    nn.init.normal_(loss.prototypes.weight)
    image = F.normalize(batch["text"][rows] + 0.3, dim=-1)
    text = F.normalize(batch["text"][rows], dim=-1)
    value = loss(image, text)["proto_loss"]
    value.backward()
    codes = sinkhorn_knopp(image @ loss.prototypes.weight.detach().T, epsilon=0.05, iterations=3)
    return {"proto/loss": value.detach(), "proto/weight_grad": loss.prototypes.weight.grad,
            "proto/codes": codes}


def _worker(rank: int, store: str, out_dir: str) -> None:
    # a short collective timeout: a rank that fails must not leave the other waiting for 30 minutes
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    model = None
    try:
        start = sum(SPLITS[:rank])
        rows = slice(start, start + SPLITS[rank])
        model = nn.parallel.DistributedDataParallel(projection())
        batch = global_batch()
        results = run_losses(batch, rows, model)
        results.update(run_prototypes(batch, rows))
        try:  # a local [B, B] teacher matrix cannot describe cross-rank pairs
            image = F.normalize(batch["x"][rows, :4], dim=-1)
            SoftLabelContrastiveLoss()(image, image, torch.tensor(1.0), torch.eye(SPLITS[rank]))
            results["local_teacher_refused"] = torch.tensor(False)
        except ValueError:
            results["local_teacher_refused"] = torch.tensor(True)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        # DDP's reducer must go before its process group: torn down the other way round at exit, a
        # loaded machine once aborted a rank ("terminate called without an active exception")
        del model
        gc.collect()
        dist.destroy_process_group()


@pytest.mark.timeout(240)
def test_two_gloo_processes_equal_one_process_on_the_global_batch(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    batch = global_batch()
    single = run_losses(batch, slice(0, 5), projection())
    close = dict(atol=1e-5, rtol=1e-5)
    for name in ("itc", "itc_groups_masked", "soft_embed", "soft_labels"):
        for rank, result in enumerate(ranks):
            torch.testing.assert_close(result[f"{name}/loss"], single[f"{name}/loss"], **close)
            # DDP already averaged the projection's gradient: equal to the single-process one
            torch.testing.assert_close(result[f"{name}/weight_grad"], single[f"{name}/weight_grad"], **close)
            torch.testing.assert_close(result[f"{name}/scale_grad"], single[f"{name}/scale_grad"], **close)
            start = sum(SPLITS[:rank])
            local_single = single[f"{name}/text_grad"][start:start + SPLITS[rank]]
            torch.testing.assert_close(result[f"{name}/text_grad"] / WORLD, local_single, **close)
    assert single["itc/text_grad"][2].abs().sum() == 0  # the invalid sample
    assert all(bool(r["local_teacher_refused"]) for r in ranks)

    # prototypes: codes come from Sinkhorn sums over both ranks; the loss is a mean over local samples
    proto_single = run_prototypes(batch, slice(0, 5))
    codes = torch.cat([r["proto/codes"] for r in ranks])
    torch.testing.assert_close(codes, proto_single["proto/codes"], **close)
    weights = [n / sum(SPLITS) for n in SPLITS]
    mean_loss = sum(w * r["proto/loss"] for w, r in zip(weights, ranks))
    torch.testing.assert_close(mean_loss, proto_single["proto/loss"], **close)
    torch.testing.assert_close(sum(w * r["proto/weight_grad"] for w, r in zip(weights, ranks)),
                               proto_single["proto/weight_grad"], **close)
