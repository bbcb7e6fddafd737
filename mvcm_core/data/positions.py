"""Where a finding lies, as per-view targets for the image tower: the side from the frontal view, the depth from the lateral.

A projection keeps the two axes it is taken along: a PA shows left / right but not front / back, a
lateral the reverse. The phantom knows both for what it places (``render.lesion_depths``: each opacity,
nodule and mass with its side and its front-to-back position), and the report gives the side of the
other lateralised findings. These targets let a warm-up of the image tower teach its cells *where* a
finding is, which the study-level findings loss never asks (``docs/status.md``, "Position targets").

Targets are multi-hot with a mask (1 = known): a term that is absent is a known 0 on both sides; a
term whose side the report leaves open, or a lesion too near the middle of the lung to call, is
masked. No torch here: the collator turns the lists into tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mvcm_core.config import (
    POSITION_DEPTH_TERMS as DEPTH_TERMS,  # what the phantom places at a recorded depth
)
from mvcm_core.config import (
    POSITION_SIDE_TERMS as SIDE_TERMS,  # lateralised findings resolved at the image size
)
from mvcm_core.data.vqa_phrases import DEPTH_MARGIN  # a depth is called as the depth questions call it

SIDES = ("left", "right")  # the slot order of a term's two side targets (depth: anterior, posterior)


def _term(item: Any, key: str) -> Any:
    return item.get(key) if isinstance(item, dict) else getattr(item, key)


def side_targets(findings: Sequence[Any], depths: Sequence[dict[str, Any]] | None
                 ) -> tuple[list[float], list[float]]:
    """``(targets, mask)``, each ``2 * len(SIDE_TERMS)`` long, index ``term * 2 + (0 left | 1 right)``.

    The placements in ``depths`` give the side exactly; otherwise the report's side does ("bilateral"
    is both; no side masks the term).
    """
    targets, mask = [0.0] * (2 * len(SIDE_TERMS)), [1.0] * (2 * len(SIDE_TERMS))
    placed = {(_term(p, "term"), _term(p, "side")) for p in depths or []}
    for position, term in enumerate(SIDE_TERMS):
        sides = {side for placed_term, side in placed if placed_term == term}
        reported = [_term(f, "side") for f in findings if _term(f, "term") == term]
        if not sides and reported:
            if None in reported:
                mask[2 * position: 2 * position + 2] = [0.0, 0.0]
                continue
            sides = {s for side in reported for s in (SIDES if side == "bilateral" else (side,))}
        for slot, side in enumerate(SIDES):
            targets[2 * position + slot] = float(side in sides)
    return targets, mask


def depth_targets(findings: Sequence[Any], depths: Sequence[dict[str, Any]] | None,
                  margin: float = DEPTH_MARGIN) -> tuple[list[float], list[float]]:
    """``(targets, mask)``, each ``2 * len(DEPTH_TERMS)`` long, index ``term * 2 + (0 anterior | 1 posterior)``.

    A placement at depth ≤ −margin makes "anterior" 1, one at ≥ margin "posterior"; a side with no
    such placement is 0, or masked when a placement lies in the middle (it may be either). A term the
    report names without recorded placements is masked.
    """
    targets, mask = [0.0] * (2 * len(DEPTH_TERMS)), [1.0] * (2 * len(DEPTH_TERMS))
    reported = {_term(f, "term") for f in findings}
    for position, term in enumerate(DEPTH_TERMS):
        values = [float(_term(p, "depth")) for p in depths or [] if _term(p, "term") == term]
        if not values:
            if term in reported:
                mask[2 * position: 2 * position + 2] = [0.0, 0.0]
            continue
        middle = any(abs(value) < margin for value in values)
        for slot, hit in enumerate((any(v <= -margin for v in values), any(v >= margin for v in values))):
            targets[2 * position + slot] = float(hit)
            if not hit and middle:
                mask[2 * position + slot] = 0.0
    return targets, mask
