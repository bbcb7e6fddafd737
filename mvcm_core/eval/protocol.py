"""Model-selection protocols and the label every evaluation output carries.

The clean protocol selects the checkpoint (epoch, threshold, any hyper-parameter) on a validation
split carved from **train** by study, and touches test once. The literature protocol — several
Med-VQA repositories pick the best epoch on the test split (M3AE duplicates VQA-RAD test as "val";
AMiF / MVCM evaluate on test every few epochs) — is available only for comparability, behind an
explicit flag, and every output it produces says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

CLEAN_LABEL = "clean: model selected on a validation split carved from train"
LITERATURE_LABEL = "LITERATURE PROTOCOL: best epoch selected on the test split (not a clean estimate)"

T = TypeVar("T")


def label_protocol(literature: bool) -> str:
    """The label every metrics file, table and plot must carry for the chosen protocol."""
    return LITERATURE_LABEL if literature else CLEAN_LABEL


@dataclass(frozen=True)
class SelectionProtocol:
    """Which split drives model selection.

    Attributes:
        literature: ``True`` only when explicitly asked for (e.g. ``--literature-protocol``):
            select the best epoch on the test split, as the literature does. Default ``False``:
            select on the validation split carved from train by :func:`carve_validation`.
    """

    literature: bool = False

    @property
    def selection_split(self) -> str:
        """The split whose metrics choose the checkpoint: ``val`` or ``test``."""
        return "test" if self.literature else "val"

    @property
    def label(self) -> str:
        """See :func:`label_protocol`."""
        return label_protocol(self.literature)

    def check_selection_split(self, split: str) -> None:
        """Refuse to select on ``split`` unless the protocol allows it.

        Raises:
            ValueError: selecting on test under the clean protocol, or on anything but the
                protocol's own selection split.
        """
        if split != self.selection_split:
            raise ValueError(
                f"model selection on {split!r} is not allowed under '{self.label}' "
                f"(select on {self.selection_split!r})"
            )


def _group_of(item: Any, key: str) -> str:
    value = item.get(key) if isinstance(item, Mapping) else getattr(item, key, None)
    if value is None:
        raise KeyError(f"item has no {key!r}: validation is carved by {key}")
    return str(value)


def _rank(seed: int, group: str) -> str:
    return hashlib.sha256(f"{seed}:{group}".encode()).hexdigest()


def carve_validation(
    train_records: Sequence[T], fraction: float = 0.1, seed: int = 0, group_key: str = "study_id"
) -> tuple[list[T], list[T]]:
    """Deterministically split training items into (train, val) by group, never splitting a group.

    Groups (studies) are ordered by ``sha256(f"{seed}:{group}")`` and the first
    ``round(fraction * n_groups)`` (at least one, and at most ``n_groups - 1``) go to validation.
    The split depends only on the seed and the group ids, not on item order.

    Args:
        train_records: dicts (or objects with the attribute) holding ``group_key``.
        fraction: share of groups for validation, in (0, 1).
        seed: seed of the group order.
        group_key: the field that must not be split, ``study_id`` by default.

    Returns:
        ``(train, val)``, each in the input order.

    Raises:
        ValueError: bad ``fraction`` or fewer than two groups. KeyError: an item lacks ``group_key``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    groups = sorted({_group_of(item, group_key) for item in train_records}, key=lambda g: _rank(seed, g))
    if len(groups) < 2:
        raise ValueError(f"need at least two distinct {group_key} values to carve a validation split")
    n_val = min(max(round(fraction * len(groups)), 1), len(groups) - 1)
    val_groups = set(groups[:n_val])
    train = [item for item in train_records if _group_of(item, group_key) not in val_groups]
    val = [item for item in train_records if _group_of(item, group_key) in val_groups]
    return train, val
