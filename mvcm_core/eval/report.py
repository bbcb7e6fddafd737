"""Compact Markdown summary of evaluation results, embedded by ``training/evaluate.py`` and the model card.

Every table prints the model beside its baselines, and the protocol label comes first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _vqa_row(name: str, metrics: Mapping[str, Any]) -> list[str]:
    dataset, yes_no = metrics["conventions"]["dataset"], metrics["conventions"]["yes_no"]
    return [
        name,
        _pct(metrics["overall"]["accuracy"]),
        _pct(dataset["open"]["accuracy"]),
        _pct(dataset["closed"]["accuracy"]),
        _pct(yes_no["open"]["accuracy"]),
        _pct(yes_no["closed"]["accuracy"]),
        str(metrics["missing"]),
    ]


def _vqa_section(
    vqa: Mapping[str, Any], baselines: Mapping[str, Any], oov: Mapping[str, Any] | None
) -> list[str]:
    conv_d, conv_y = vqa["conventions"]["dataset"], vqa["conventions"]["yes_no"]
    lines = [
        "## VQA",
        "",
        f"Exact match after normalisation, n = {vqa['n']} (dataset convention: {conv_d['open']['n']} open / "
        f"{conv_d['closed']['n']} closed; yes/no convention: {conv_y['open']['n']} open / "
        f"{conv_y['closed']['n']} closed). Accuracy in %.",
        "",
    ]
    header = ["", "overall", "open (dataset)", "closed (dataset)", "open (yes/no)", "closed (yes/no)",
              "missing"]
    rows = [_vqa_row("**model**", vqa)]
    rows += [_vqa_row(f"{name} baseline", b["metrics"]) for name, b in baselines.items()]
    lines += _table(header, rows)
    if oov:
        bound = ", ".join(
            f"{group} {_pct(cell['share'])}% (max accuracy {_pct(cell['max_accuracy'])})"
            for group, cell in oov.items()
            if cell["n"]
        )
        lines += ["", f"Answers outside the train-only vocabulary: {bound}."]
    lines += ["", "### Per question type", ""]
    names = list(baselines)
    header = ["question type", "n", "model", *names]
    rows = []
    for ctype, cell in vqa["by_content_type"].items():
        cells = [baselines[b]["metrics"]["by_content_type"].get(ctype, {}) for b in names]
        marks = [_pct(c.get("accuracy")) for c in cells]
        rows.append([ctype, str(cell["n"]), _pct(cell["accuracy"]), *marks])
    lines += _table(header, rows)
    if vqa.get("by_required_view"):
        lines += ["", "### Per required view", ""]
        rows = [[v, str(c["n"]), _pct(c["accuracy"])] for v, c in vqa["by_required_view"].items()]
        lines += _table(["required view", "n", "model"], rows)
    return lines


def _retrieval_row(name: str, block: Mapping[str, Any] | None, ks: Sequence[int]) -> list[str] | None:
    if block is None:
        return None
    precision = (block.get("precision") or {}).get("exact") or {}
    overlap = (block.get("precision") or {}).get("overlap") or {}
    recall = [_pct(block["recall"].get(f"R@{k}")) for k in ks]
    return [name, *recall, *[_pct(precision.get(f"P@{k}")) for k in ks], _pct(precision.get("mAP")),
            _pct(overlap.get("P@5"))]


def _retrieval_section(retrieval: Mapping[str, Any], ks: Sequence[int]) -> list[str]:
    lines = [
        "## Retrieval",
        "",
        f"N = {retrieval['n']} study–report pairs, {retrieval['n_groups']} distinct report texts. "
        f"Search: {retrieval['search']}. Ties: {retrieval['ties']}. Recall is instance-level and "
        "duplicate-aware; precision is label-based (P@K and mAP: exact label-vector match; overlap P@5: at "
        "least one shared finding). Re-ranked: the ITC top-k re-scored by ITM. Scored: ITC minus a hub "
        "penalty plus the findings likelihood, weights chosen on validation (mvcm_core.report_scoring). In %.",
        "",
    ]
    header = ["direction", *[f"R@{k}" for k in ks], *[f"P@{k}" for k in ks], "mAP", "overlap P@5"]
    rows = []
    for direction, title in (("i2t", "study → report"), ("t2i", "report → study")):
        block = retrieval[direction]
        labels = (("model", f"**{title}**"), ("itm_rerank", "  re-ranked by ITM"), ("scored", "  scored"),
                  ("random", "  random"), ("label_prior", "  label prior"))
        for name, label in labels:
            row = _retrieval_row(label, block.get(name), ks)
            if row is not None:
                rows.append(row)
    return lines + _table(header, rows)


def metrics_markdown(
    vqa: Mapping[str, Any] | None = None,
    retrieval: Mapping[str, Any] | None = None,
    baselines: Mapping[str, Any] | None = None,
    protocol: str = "",
    oov: Mapping[str, Any] | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> str:
    """Markdown tables of the results, each model row beside its baselines.

    Args:
        vqa: :func:`~mvcm_core.eval.vqa_metrics.vqa_accuracy` output of the model.
        retrieval: :func:`~mvcm_core.eval.retrieval_report.retrieval_report` output.
        baselines: :func:`~mvcm_core.eval.vqa_metrics.majority_baselines` output.
        protocol: :func:`~mvcm_core.eval.protocol.label_protocol` string (required in practice).
        oov: :func:`~mvcm_core.eval.vqa_metrics.out_of_vocabulary` output.
        ks: retrieval cut-offs to tabulate.

    Raises:
        ValueError: without a protocol label — no number leaves without one.
    """
    if not protocol:
        raise ValueError("metrics_markdown needs the protocol label (see label_protocol)")
    lines = [f"**Protocol:** {protocol}", ""]
    if vqa is not None:
        lines += _vqa_section(vqa, baselines or {}, oov) + [""]
    if retrieval is not None:
        lines += _retrieval_section(retrieval, ks) + [""]
    return "\n".join(lines)
