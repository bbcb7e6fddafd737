"""Shared plumbing of the readers: one-line errors, skip statistics, file and split helpers.

Policy: a missing or unreadable *file*, a wrong *column* set or a file that is not the expected
format raises :class:`ReaderError` with one line naming the file. A malformed *row* (or a row
whose image is missing) is skipped and counted in :class:`ReadStats`; the reader then emits one
:class:`ReaderWarning` line. When more than half of a file's rows are malformed the file is
treated as the wrong format and :class:`ReaderError` is raised instead.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .records import ANSWER_TYPES, SPLITS, answer_type_from_answer

MALFORMED = "malformed row"
MISSING_IMAGE = "missing image"
_MAX_EXAMPLES = 5


class ReaderError(ValueError):
    """A dataset cannot be read; the message is one line and names the offending file."""


class ReaderWarning(UserWarning):
    """Rows were skipped while reading a dataset (the message gives counts and a first example)."""


@dataclass
class ReadStats:
    """What a reader kept, filtered and skipped.

    Attributes:
        dataset: registry name.
        kept: number of records returned.
        filtered: rows left out on purpose (e.g. SLAKE Chinese questions, unwanted views), by reason.
        skipped: rows dropped because they were broken (malformed, missing image), by reason.
        examples: the first few skip messages, each naming the file and row.
    """

    dataset: str
    kept: int = 0
    filtered: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def skip(self, reason: str, where: str) -> None:
        """Count one broken row; ``where`` names the file and row, e.g. ``"testset.json[17]"``."""
        self.skipped[reason] += 1
        if len(self.examples) < _MAX_EXAMPLES:
            self.examples.append(f"{where}: {reason}")

    def filter(self, reason: str, count: int = 1) -> None:
        """Count rows left out on purpose."""
        self.filtered[reason] += count

    def summary(self) -> str:
        """One line: kept, filtered and skipped counts."""
        parts = [f"{self.dataset}: kept {self.kept}"]
        if self.filtered:
            parts.append("filtered " + ", ".join(f"{k}: {v}" for k, v in sorted(self.filtered.items())))
        if self.skipped:
            parts.append("skipped " + ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items())))
        return "; ".join(parts)

    def finish(self, kept: int) -> None:
        """Record the final count and warn once if anything was skipped."""
        self.kept = kept
        if self.skipped:
            first = f" (first: {self.examples[0]})" if self.examples else ""
            warnings.warn(self.summary() + first, ReaderWarning, stacklevel=3)


def check_malformed_fraction(stats: ReadStats, path: Path, malformed_before: int, rows: int) -> None:
    """Raise when most rows of ``path`` were malformed: the file is probably not this format."""
    malformed = stats.skipped[MALFORMED] - malformed_before
    if rows and malformed * 2 > rows:
        raise ReaderError(f"{path}: {malformed} of {rows} rows are malformed; is this the right file?")


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a file, else raise a one-line error naming it."""
    if not path.is_file():
        raise ReaderError(f"missing {what}: {path}")
    return path


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a directory, else raise a one-line error naming it."""
    if not path.is_dir():
        raise ReaderError(f"missing {what} folder: {path}")
    return path


def first_existing(candidates: Iterable[Path]) -> Path | None:
    """The first candidate path that exists, or None."""
    return next((p for p in candidates if p.exists()), None)


def load_json(path: Path) -> Any:
    """Parse a JSON file; a syntax error becomes one line with the file, line and column."""
    require_file(path, "JSON file")
    try:
        with path.open("r", encoding="utf-8-sig") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise ReaderError(
            f"{path}: malformed JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ReaderError(f"{path}: cannot read ({err.__class__.__name__}: {err})") from None


def load_json_list(path: Path) -> list[Any]:
    """Parse a JSON file whose top level must be a list of records."""
    data = load_json(path)
    if not isinstance(data, list):
        raise ReaderError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def iter_json_rows(
    path: Path, required: Sequence[str], stats: ReadStats
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(where, row)`` for each record of a JSON list that has every ``required`` key.

    Rows that are not objects or miss a key are skipped and counted as malformed.
    """
    rows = load_json_list(path)
    before = stats.skipped[MALFORMED]
    for index, row in enumerate(rows):
        where = f"{path.name}[{index}]"
        if not isinstance(row, dict):
            stats.skip(MALFORMED, where)
            continue
        missing = [key for key in required if row.get(key) is None or str(row[key]).strip() == ""]
        if missing:
            stats.skip(MALFORMED, f"{where} lacks {', '.join(missing)}")
            continue
        yield where, row
    check_malformed_fraction(stats, path, before, len(rows))


def open_text(path: Path) -> io.TextIOBase:
    """Open a text file for reading, transparently gunzipping ``*.gz``."""
    require_file(path, "file")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return path.open("r", encoding="utf-8-sig", newline="")


def read_csv_rows(path: Path, required: Sequence[str]) -> Iterator[dict[str, str]]:
    """Yield the rows of a (possibly gzipped) CSV after checking its header has ``required`` columns."""
    try:
        with open_text(path) as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [col for col in required if col not in header]
            if missing:
                raise ReaderError(f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(header)})")
            yield from reader
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as err:
        raise ReaderError(f"{path}: cannot read ({err.__class__.__name__}: {err})") from None


def resolve_split(split: str | None, dataset: str, available: Sequence[str], note: str = "") -> list[str]:
    """Turn the ``split`` argument into the list of our split names to read.

    Args:
        split: None for every split the dataset has, else ``"train"``, ``"val"`` or ``"test"``.
        dataset: registry name, for the message.
        available: our split names this dataset has.
        note: appended to the error when a split is absent (e.g. how to carve a validation set).
    """
    if split is None:
        return list(available)
    if split not in SPLITS:
        raise ReaderError(f"{dataset}: unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if split not in available:
        raise ReaderError(f"{dataset} has no {split!r} split (it has {', '.join(available)}){note}")
    return [split]


def image_present(path: Path, check_images: bool) -> bool:
    """Whether an image counts as present (always True when checks are off)."""
    return (not check_images) or path.is_file()


def dataset_answer_type(raw: object, answer: str) -> tuple[str, str]:
    """``(answer_type, source)`` from a dataset's own field, else from the yes/no convention."""
    value = str(raw).strip().upper() if raw is not None else ""
    if value in ANSWER_TYPES:
        return value, "dataset"
    return answer_type_from_answer(answer), "yes/no"
