"""AMiF soft-label contrastive losses: KL to a frozen teacher's similarity, λ on the diagonal.

``target = softmax(teacher_logits + λ·I)`` (rows for a→b, columns for b→a),
``pred = log_softmax(logit_scale · a bᵀ)``, ``loss = ½ [KL(target‖pred)_{a→b} + KL(target‖pred)_{b→a}]``
(``batchmean``). ``name`` picks the key: ``soft_itc`` (study↔report, teacher image–text),
``soft_inter_view`` (frontal↔lateral, teacher image–image), ``soft_intra_text`` (report↔report,
teacher text–text; pass the same or two dropout views of the text embeddings as ``a`` and ``b``).

The teacher is either a frozen model's embeddings (:func:`embedding_teacher_logits`, AMiF uses
BiomedCLIP) or the structured-findings overlap of the reports (:func:`findings_teacher_logits`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mvcm_core.losses._numerics import float32_math, grad_safe_zero
from mvcm_core.losses.contrastive import gather_pair
from mvcm_core.losses.distributed import world_size


def findings_teacher_logits(
    labels: torch.Tensor, scale: float = 10.0, normal_index: int | None = None
) -> torch.Tensor:
    """Teacher logits from the overlap of structured findings: ``scale · Jaccard(labels_i, labels_j)``.

    Jaccard (``|A∩B| / |A∪B|``) rather than cosine: it is 1 only for identical finding sets and
    penalises extra findings on either side equally, whereas the cosine of multi-hot vectors rewards
    a report whose findings merely contain the other's. A report with no finding at all is "normal":
    an implicit no-finding label is added to such rows, so two normal reports overlap fully (Jaccard 1)
    and a normal report overlaps nothing abnormal (0). If the label vocabulary has its own
    "normal" column, pass its ``normal_index`` and it is merged with the implicit label (a report
    tagged "normal" and an untagged one are the same).

    Args:
        labels: ``[B, L]`` multi-hot (0/1) findings.
        scale: inverse temperature of the teacher softmax.
        normal_index: column of an explicit "normal" label, if any.

    Returns:
        ``[B, B]`` float32 logits, symmetric, ``scale`` on the diagonal.
    """
    labels = (labels.detach().float() > 0.5).float()
    no_finding = (labels.sum(dim=1, keepdim=True) == 0).float()  # [B, 1]
    if normal_index is None:
        labels = torch.cat([labels, no_finding], dim=1)  # [B, L + 1]
    else:
        labels = labels.clone()
        labels[:, normal_index] = torch.maximum(labels[:, normal_index], no_finding[:, 0])
    intersection = labels @ labels.T  # [B, B]
    sizes = labels.sum(dim=1)
    union = sizes[:, None] + sizes[None, :] - intersection
    return scale * intersection / union.clamp(min=1.0)


def embedding_teacher_logits(
    teacher_a: torch.Tensor, teacher_b: torch.Tensor, scale: float | torch.Tensor
) -> torch.Tensor:
    """Teacher logits ``scale · cos(teacher_a_i, teacher_b_j)`` from a frozen model's embeddings.

    Args:
        teacher_a: ``[B, F]`` teacher embeddings of the ``a`` side (normalised here).
        teacher_b: ``[B, F]`` teacher embeddings of the ``b`` side.
        scale: the teacher's own logit scale (already exponentiated), e.g. BiomedCLIP's.

    Returns:
        ``[B, B]`` float32 logits, no gradient.
    """
    with torch.no_grad():
        fa = F.normalize(teacher_a.float(), dim=-1)
        fb = F.normalize(teacher_b.float(), dim=-1)
        return torch.as_tensor(scale, dtype=torch.float32, device=fa.device) * fa @ fb.T


def _kl_batchmean(log_target: torch.Tensor, log_pred: torch.Tensor) -> torch.Tensor:
    """``KL(target ‖ pred)`` summed over columns, averaged over rows; both as log-probabilities."""
    return F.kl_div(log_pred, log_target, reduction="batchmean", log_target=True)


class SoftLabelContrastiveLoss(nn.Module):
    """KL divergence to a teacher's softened similarity (AMiF ``itgc`` / ``imvc`` / ``utgc``).

    Args:
        name: key prefix: ``soft_itc``, ``soft_inter_view`` or ``soft_intra_text``.
        flex_weight: λ added to the teacher logits' diagonal (AMiF: 0.01 is best).
        gather: gather students and teacher inputs across ranks (global batch on every rank).
        teacher_scale: inverse temperature used when the teacher is given as embeddings or labels.
        normal_index: column of an explicit "normal" finding in ``teacher_labels``, if any
            (see :func:`findings_teacher_logits`).
    """

    def __init__(
        self,
        name: str = "soft_itc",
        flex_weight: float = 0.01,
        gather: bool = True,
        teacher_scale: float = 10.0,
        normal_index: int | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.flex_weight = flex_weight
        self.gather = gather
        self.teacher_scale = teacher_scale
        self.normal_index = normal_index

    def _teacher(
        self,
        teacher_logits: torch.Tensor | None,
        teacher_a: torch.Tensor | None,
        teacher_b: torch.Tensor | None,
        teacher_labels: torch.Tensor | None,
        teacher_scale: float | torch.Tensor | None,
    ) -> torch.Tensor:
        """Global ``[B, B]`` teacher logits from whichever teacher input was given (exactly one)."""
        given = [teacher_logits is not None, teacher_a is not None, teacher_labels is not None]
        if sum(given) != 1 or (teacher_a is None) != (teacher_b is None):
            raise ValueError("give one teacher: teacher_logits, teacher_a + teacher_b, or teacher_labels")
        scale = self.teacher_scale if teacher_scale is None else teacher_scale
        if teacher_logits is not None:
            if self.gather and world_size() > 1:
                raise ValueError(
                    "a local [B, B] teacher_logits cannot cover the gathered batch: pass teacher_a/teacher_b "
                    "or teacher_labels (they are gathered), or set gather=False"
                )
            return teacher_logits.detach().float()
        if teacher_labels is not None:
            return findings_teacher_logits(teacher_labels, scale=float(scale), normal_index=self.normal_index)
        return embedding_teacher_logits(teacher_a, teacher_b, scale)

    def forward(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        logit_scale: torch.Tensor,
        teacher_logits: torch.Tensor | None = None,
        *,
        valid: torch.Tensor | None = None,
        teacher_a: torch.Tensor | None = None,
        teacher_b: torch.Tensor | None = None,
        teacher_labels: torch.Tensor | None = None,
        teacher_scale: float | torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Score a batch against the teacher.

        Args:
            a: ``[B, E]`` L2-normalised student embeddings.
            b: ``[B, E]`` L2-normalised student embeddings paired row by row with ``a``.
            logit_scale: scalar, already exponentiated.
            teacher_logits: ``[B, B]`` teacher similarity logits (single process only).
            valid: ``[B]`` bool, False drops the sample's row and column.
            teacher_a: ``[B, F]`` frozen teacher embeddings of ``a``'s inputs (with ``teacher_b``).
            teacher_b: ``[B, F]`` frozen teacher embeddings of ``b``'s inputs.
            teacher_labels: ``[B, L]`` multi-hot findings: the structured-findings teacher.
            teacher_scale: overrides the constructor's ``teacher_scale`` for embeddings/labels.

        Returns:
            ``{"<name>_loss": scalar}``.
        """
        key = f"{self.name}_loss"
        with float32_math(a):
            extras = {"valid": valid, "ta": teacher_a, "tb": teacher_b, "labels": teacher_labels}
            a32, b32, extras = gather_pair(a.float(), b.float(), extras, self.gather)
            teacher = self._teacher(
                teacher_logits, extras["ta"], extras["tb"], extras["labels"], teacher_scale
            )  # [B_global, B_global]
            if extras["valid"] is not None:
                keep = extras["valid"].bool()
                a32, b32, teacher = a32[keep], b32[keep], teacher[keep][:, keep]
            n = a32.shape[0]
            if n == 0:
                return {key: grad_safe_zero(a, b, logit_scale)}
            logits = logit_scale.float() * a32 @ b32.T  # [n, n]
            flex = self.flex_weight * torch.eye(n, device=a32.device)
            target_ab = F.log_softmax(teacher + flex, dim=1)
            target_ba = F.log_softmax(teacher.T + flex, dim=1)
            loss_ab = _kl_batchmean(target_ab, F.log_softmax(logits, dim=1))
            loss_ba = _kl_batchmean(target_ba, F.log_softmax(logits.T, dim=1))
        return {key: (loss_ab + loss_ba) / 2}
