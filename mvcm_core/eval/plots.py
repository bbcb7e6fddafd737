"""Figures saved beside ``metrics.json``: recall curves, per-finding accuracy, top confusions.

matplotlib is imported lazily with the Agg backend, so importing :mod:`mvcm_core.eval` stays
cheap and works headless. Every figure takes the protocol label and prints it under the title.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_MODEL = "#1f5fa8"
_RANDOM = "#8c8c8c"
_PRIOR = "#d08c1a"
_MARKERS = ("D", "o", "s", "^", "v")
_MARKER_COLOURS = ("#c0392b", "#6a3d9a", "#2b8c5a", "#555555", "#b15928")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path, protocol: str | None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if protocol:
        fig.text(0.5, 0.005, protocol, ha="center", va="bottom", fontsize=8, color="#444444")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_recall_curve(results: Mapping[str, Any], path: str | Path, protocol: str | None = None) -> Path:
    """Recall@K for K = 1..max in both directions: model vs random and label-prior baselines.

    Args:
        results: :func:`~mvcm_core.eval.retrieval_report.retrieval_report` output.
        path: PNG path.
        protocol: the :func:`~mvcm_core.eval.protocol.label_protocol` string.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    titles = {"i2t": "study → report (i2t)", "t2i": "report → study (t2i)"}
    for ax, direction in zip(axes, ("i2t", "t2i")):
        block = results[direction]
        model = block["model"]["recall_curve"]
        ks = range(1, len(model) + 1)
        ax.plot(ks, model, color=_MODEL, lw=2, label="model")
        ax.plot(ks, block["random"]["recall_curve"], color=_RANDOM, ls="--", label="random ranking")
        if block.get("label_prior"):
            ax.plot(ks, block["label_prior"]["recall_curve"], color=_PRIOR, ls=":", lw=2, label="label prior")
        for name, style in (("itm_rerank", "-."), ("scored", (0, (5, 1)))):
            if block.get(name):
                ax.plot(ks, block[name]["recall_curve"], color=_MODEL, ls=style, lw=1, label=name.replace("_", " "))
        for k in (1, 5, 10):
            if k <= len(model):
                ax.plot(k, model[k - 1], "o", color=_MODEL, ms=4)
                ax.annotate(f"R@{k} {model[k - 1]:.2f}", (k, model[k - 1]), textcoords="offset points",
                            xytext=(4, -12), fontsize=8, color=_MODEL)
        ax.set_title(titles[direction], fontsize=11)
        ax.set_xscale("log")
        ticks = [k for k in (1, 2, 5, 10, 20, 50, 100) if k <= len(model)]
        ax.set_xticks(ticks, [str(k) for k in ticks])
        ax.set_xlabel("K (log scale; duplicate-aware, ties against the model)")
        ax.set_xlim(1, max(len(model), 2))
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Recall@K")
    axes[0].legend(loc="lower right", fontsize=9, frameon=False)
    fig.suptitle(f"Retrieval recall curve (N = {results.get('n', '?')} pairs, "
                 f"{results.get('n_groups', '?')} distinct reports)", fontsize=12)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(fig, path, protocol)


def plot_per_finding_accuracy(
    vqa_metrics: Mapping[str, Any],
    baselines: Mapping[str, Any] | None,
    path: str | Path,
    protocol: str | None = None,
    key: str = "by_finding",
    baseline_names: Sequence[str] | None = None,
) -> Path:
    """Horizontal accuracy bars per finding term, each baseline as a marker on its row.

    Args:
        vqa_metrics: :func:`~mvcm_core.eval.vqa_metrics.vqa_accuracy` output of the model.
        baselines: :func:`~mvcm_core.eval.vqa_metrics.majority_baselines` output (or ``None``).
        path: PNG path.
        protocol: the protocol label.
        key: ``by_finding`` (default; falls back to ``by_content_type`` when empty),
            ``by_content_type`` or ``by_required_view``.
        baseline_names: which baselines to mark (default: all given).
    """
    groups = vqa_metrics.get(key) or {}
    if not groups and key == "by_finding":
        key, groups = "by_content_type", vqa_metrics.get("by_content_type", {})
    rows = sorted((g for g in groups if groups[g]["n"]), key=lambda g: groups[g]["accuracy"])
    baselines = baselines or {}
    names = list(baseline_names or baselines)[: len(_MARKERS)]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.32 * max(len(rows), 1)))
    acc = [groups[g]["accuracy"] for g in rows]
    ax.barh(range(len(rows)), acc, color=_MODEL, alpha=0.45, height=0.65, label="model")
    for i, g in enumerate(rows):
        ax.text(1.04, i, f"{acc[i]:.2f}  (n={groups[g]['n']})", va="center", fontsize=8,
                transform=ax.get_yaxis_transform())
    for j, name in enumerate(names):
        cells = baselines[name]["metrics"].get(key, {})
        xs = [cells.get(g, {}).get("accuracy") for g in rows]
        ys = [i for i, x in enumerate(xs) if x is not None]
        offset = (j - (len(names) - 1) / 2) * 0.14  # stagger so equal values stay visible
        ax.scatter([xs[i] for i in ys], [i + offset for i in ys], marker=_MARKERS[j], s=26,
                   color=_MARKER_COLOURS[j], edgecolor="white", linewidth=0.5, zorder=3,
                   clip_on=False, label=name.replace("_", " "))
    ax.set_yticks(range(len(rows)), rows, fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("exact-match accuracy")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(names) + 1, fontsize=8,
              frameon=False, handletextpad=0.3, columnspacing=1.2)
    overall = vqa_metrics["overall"]["accuracy"]
    ax.set_title(f"VQA accuracy per {key.removeprefix('by_').replace('_', ' ')} "
                 f"(overall {overall:.3f}, n = {vqa_metrics['n']})", fontsize=11, pad=22)
    fig.tight_layout(rect=(0, 0.03, 0.9, 1))
    return _save(fig, path, protocol)


def plot_confusions(
    confusions: Sequence[Mapping[str, Any]], path: str | Path, protocol: str | None = None
) -> Path:
    """Bar chart of the most frequent errors, labelled ``type: truth → prediction``.

    Args:
        confusions: :func:`~mvcm_core.eval.vqa_metrics.top_confusions` output.
        path: PNG path.
        protocol: the protocol label.
    """
    rows = list(confusions)[::-1]  # most frequent on top
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.34 * max(len(rows), 1)))
    counts = [row["count"] for row in rows]
    labels = [f"{row['content_type']}:  {row['answer']}  →  {row['prediction']}" for row in rows]
    ax.barh(range(len(rows)), counts, color="#b03a2e", alpha=0.8, height=0.65)
    for i, row in enumerate(rows):
        ax.text(row["count"], i, f"  {row['count']}  ({row['share_of_errors']:.0%} of errors)",
                va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), labels, fontsize=9)
    ax.set_xlim(0, max(counts, default=1) * 1.35)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("count")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Most frequent VQA errors (question type: truth → prediction)", fontsize=11)
    if not rows:
        ax.text(0.5, 0.5, "no errors", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(fig, path, protocol)
