"""Compare the metrics of two served checkpoints (a rebuild against the shipped one).

``python -m training.compare_builds REBUILT_DIR [--against assets/checkpoints/mvcm-tiny-phantom]
[--tolerance 0.02]`` prints every numeric metric of both manifests side by side with the difference
and exits non-zero when a test metric differs by more than the tolerance (absolute, in the metric's
own unit: accuracies and recalls are fractions). Timings and counts are shown, never judged.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

JUDGED_PREFIXES = ("vqa_test", "retrieval_test", "calibration.ece", "ood.test_in_distribution")


def flatten(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """``("a.b.c", value)`` for every numeric leaf of a nested dict."""
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from flatten(value, f"{name}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield name, float(value)


def read_metrics(folder: Path) -> dict[str, float]:
    """The numeric metrics of a checkpoint folder's manifest."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise SystemExit(f"compare_builds: no manifest.json in {folder}")
    return dict(flatten(json.loads(path.read_text()).get("metrics", {})))


def compare(rebuilt: dict[str, float], shipped: dict[str, float], tolerance: float) -> tuple[list[str], list[str]]:
    """Markdown table rows and the judged metrics that differ by more than ``tolerance``."""
    rows, failures = ["| metric | shipped | rebuilt | difference | judged |", "| --- | --- | --- | --- | --- |"], []
    for name in sorted(set(rebuilt) | set(shipped)):
        old, new = shipped.get(name), rebuilt.get(name)
        judged = name.startswith(JUDGED_PREFIXES)
        if old is None or new is None:
            rows.append(f"| {name} | {old if old is not None else '–'} | {new if new is not None else '–'} | – | – |")
            continue
        difference = new - old
        verdict = "–" if not judged else ("ok" if abs(difference) <= tolerance else "DIFFERS")
        if verdict == "DIFFERS":
            failures.append(name)
        rows.append(f"| {name} | {old:.4g} | {new:.4g} | {difference:+.4g} | {verdict} |")
    return rows, failures


def main(argv: Sequence[str] | None = None) -> int:
    """Print the comparison; exit 1 when a judged metric is outside the tolerance."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rebuilt", type=Path, help="the rebuilt checkpoint folder")
    parser.add_argument("--against", type=Path, default=Path("assets/checkpoints/mvcm-tiny-phantom"))
    parser.add_argument("--tolerance", type=float, default=0.02, help="largest accepted absolute difference")
    args = parser.parse_args(argv)
    rows, failures = compare(read_metrics(args.rebuilt), read_metrics(args.against), args.tolerance)
    print("\n".join(rows))
    if failures:
        print(f"compare_builds: {len(failures)} metric(s) differ by more than {args.tolerance}: {', '.join(failures)}")
        return 1
    print(f"compare_builds: every judged metric within {args.tolerance}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
