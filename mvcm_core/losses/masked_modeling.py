"""Reconstruction objectives: masked language modelling (MLM) and MAE-style masked image modelling (MIM).

The "image-conditioned" part of MLM (MPMA, ALTA, M3AE) is the model's: it conditions the masked
text stream on the image; these losses only score its predictions. The masking helpers live here so
that the data pipeline, the model and the tests share one recipe.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mvcm_core.losses._numerics import float32_math, grad_safe_zero

IGNORE_INDEX = -100


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    special_mask: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    probability: float = 0.15,
    generator: torch.Generator | None = None,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: pick ``probability`` of the real, non-special tokens; of those, 80% → [MASK],
    10% → a random token, 10% unchanged.

    ALTA's variant (probability 0.5, always [MASK]) is ``probability=0.5, mask_fraction=1.0,
    random_fraction=0.0``.

    Args:
        input_ids: ``[B, T]`` long token ids.
        attention_mask: ``[B, T]``, 1/True = real token, 0 = padding (never masked).
        special_mask: ``[B, T]``, 1/True = [CLS]/[SEP]/... (never masked).
        mask_token_id: id of [MASK].
        vocab_size: random replacements are drawn from ``[0, vocab_size)``.
        generator: for reproducible masks (must live on ``input_ids``' device).

    Returns:
        ``(masked_ids [B, T], labels [B, T])``; labels hold the original id where a token was picked,
        ``-100`` elsewhere.
    """
    candidates = attention_mask.bool() & ~special_mask.bool()
    device = input_ids.device

    def draw(p: float) -> torch.Tensor:
        return torch.rand(input_ids.shape, generator=generator, device=device) < p

    picked = draw(probability) & candidates
    labels = torch.where(picked, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    to_mask = picked & draw(mask_fraction)
    # among the rest, random_fraction / (1 - mask_fraction) become random tokens
    rest = 1.0 - mask_fraction
    to_random = picked & ~to_mask & draw(random_fraction / rest if rest > 0 else 0.0)
    random_ids = torch.randint(
        vocab_size, input_ids.shape, generator=generator, device=device, dtype=input_ids.dtype
    )
    masked_ids = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    masked_ids = torch.where(to_random, random_ids, masked_ids)
    return masked_ids, labels


class MLMLoss(nn.Module):
    """Cross-entropy on the masked positions only (``-100`` labels are ignored)."""

    def forward(self, mlm_logits: torch.Tensor, mlm_labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Score predictions.

        Args:
            mlm_logits: ``[B, T, V]`` vocabulary logits of the (image-conditioned) masked text stream.
            mlm_labels: ``[B, T]`` original ids at masked positions, ``-100`` elsewhere.

        Returns:
            ``{"mlm_loss": scalar, "mlm_acc": accuracy on masked tokens}``; a grad-safe 0 if
            nothing is masked.
        """
        scored = mlm_labels != IGNORE_INDEX
        if not bool(scored.any()):
            zero = grad_safe_zero(mlm_logits)
            return {"mlm_loss": zero, "mlm_acc": zero.detach()}
        with float32_math(mlm_logits):
            logits = mlm_logits.float().flatten(0, 1)  # [B*T, V]
            labels = mlm_labels.flatten()  # [B*T]
            loss = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
            accuracy = (logits.argmax(dim=1) == labels)[labels != IGNORE_INDEX].float().mean()
        return {"mlm_loss": loss, "mlm_acc": accuracy.detach()}


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """Cut images into non-overlapping patches, MAE layout (pixel order: row, column, channel).

    Args:
        images: ``[B, C, H, W]`` with H and W multiples of ``patch``.

    Returns:
        ``[B, N, patch*patch*C]`` with ``N = (H/patch)·(W/patch)`` in row-major patch order.
    """
    b, c, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"image {h}x{w} is not a multiple of the patch size {patch}")
    rows, cols = h // patch, w // patch
    x = images.reshape(b, c, rows, patch, cols, patch)  # [B, C, h, p, w, q]
    x = x.permute(0, 2, 4, 3, 5, 1)  # [B, h, w, p, q, C]
    return x.reshape(b, rows * cols, patch * patch * c)  # [B, N, p*q*C]


def unpatchify(patches: torch.Tensor, patch: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``[B, N, p*p*C]`` → ``[B, C, height, width]``."""
    b, n, dim = patches.shape
    rows, cols, c = height // patch, width // patch, dim // (patch * patch)
    if rows * cols != n or c * patch * patch != dim:
        raise ValueError(f"{n} patches of {dim} values do not tile {height}x{width} with patch {patch}")
    x = patches.reshape(b, rows, cols, patch, patch, c)  # [B, h, w, p, q, C]
    x = x.permute(0, 5, 1, 3, 2, 4)  # [B, C, h, p, w, q]
    return x.reshape(b, c, height, width)


def random_patch_mask(
    batch: int, num_patches: int, ratio: float, generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE per-sample random masking by argsort of uniform noise.

    Returns:
        ``mask [B, N]`` float (1 = masked, to predict; 0 = kept), ``ids_keep [B, N_keep]`` (indices of
        kept patches, ``N_keep = int(N·(1 − ratio))``) and ``ids_restore [B, N]`` (un-shuffles the
        ``[kept ; masked]`` sequence back to patch order).
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    keep = int(num_patches * (1.0 - ratio))
    noise = torch.rand(batch, num_patches, generator=generator, device=device)  # [B, N]
    ids_shuffle = noise.argsort(dim=1)  # ascending: the first `keep` are kept
    ids_restore = ids_shuffle.argsort(dim=1)
    mask = torch.ones(batch, num_patches, device=noise.device)
    mask[:, :keep] = 0.0
    mask = mask.gather(1, ids_restore)  # [B, N] back in patch order
    return mask, ids_shuffle[:, :keep], ids_restore


class MIMLoss(nn.Module):
    """MAE reconstruction loss: MSE on masked patches only, optionally against per-patch normalised pixels.

    Args:
        norm_pix: normalise each target patch to zero mean / unit variance (MAE ``norm_pix_loss``).
    """

    def __init__(self, norm_pix: bool = True) -> None:
        super().__init__()
        self.norm_pix = norm_pix

    def forward(
        self, mim_pred: torch.Tensor, mim_target: torch.Tensor, mim_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Score predictions.

        Args:
            mim_pred: ``[B, N, p*p*C]`` predicted patch pixels.
            mim_target: ``[B, N, p*p*C]`` true patch pixels (:func:`patchify` of the images).
            mim_mask: ``[B, N]``, 1 = masked (scored), 0 = visible (ignored).

        Returns:
            ``{"mim_loss": scalar}``; a grad-safe 0 when no patch is masked.
        """
        weights = mim_mask.float()
        if float(weights.sum()) == 0.0:
            return {"mim_loss": grad_safe_zero(mim_pred)}
        with float32_math(mim_pred):
            target = mim_target.detach().float()
            if self.norm_pix:
                mean = target.mean(dim=-1, keepdim=True)
                var = target.var(dim=-1, keepdim=True)
                target = (target - mean) / (var + 1e-6).sqrt()
            per_patch = (mim_pred.float() - target).pow(2).mean(dim=-1)  # [B, N]
            loss = (per_patch * weights).sum() / weights.sum()
        return {"mim_loss": loss}
