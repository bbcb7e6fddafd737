"""Evaluation: Med-VQA and Med-ITR metrics as pure numpy functions, baselines, protocols, plots.

| module | what |
| --- | --- |
| :mod:`~mvcm_core.eval.vqa_metrics` | accuracy under both closed conventions, blind baselines, confusions |
| :mod:`~mvcm_core.eval.retrieval_metrics` | Recall@K, label Precision@K / mAP, re-rank, baselines |
| :mod:`~mvcm_core.eval.retrieval_report` | both directions (i2t, t2i) beside their baselines |
| :mod:`~mvcm_core.eval.protocol` | validation carved from train by study; the protocol label |
| :mod:`~mvcm_core.eval.report` | Markdown tables |
| :mod:`~mvcm_core.eval.plots` | PNG figures (matplotlib imported lazily, Agg) |

No torch import anywhere in this package; see ``docs/evaluation.md``.
"""

from mvcm_core.eval.plots import plot_confusions, plot_per_finding_accuracy, plot_recall_curve
from mvcm_core.eval.protocol import (
    CLEAN_LABEL,
    LITERATURE_LABEL,
    SelectionProtocol,
    carve_validation,
    label_protocol,
)
from mvcm_core.eval.report import metrics_markdown
from mvcm_core.eval.retrieval_metrics import (
    first_hit_ranks,
    label_precision_at_k,
    label_prior_baseline,
    label_prior_scores,
    label_relevance,
    random_baseline,
    recall_at_k,
    recall_curve,
    rerank,
    topk_candidates,
)
from mvcm_core.eval.retrieval_report import direction_report, retrieval_report
from mvcm_core.eval.vqa_metrics import (
    majority_baselines,
    normalise_answer,
    out_of_vocabulary,
    score_records,
    top_confusions,
    vqa_accuracy,
)

__all__ = [
    "CLEAN_LABEL",
    "LITERATURE_LABEL",
    "SelectionProtocol",
    "carve_validation",
    "direction_report",
    "first_hit_ranks",
    "label_precision_at_k",
    "label_prior_baseline",
    "label_prior_scores",
    "label_protocol",
    "label_relevance",
    "majority_baselines",
    "metrics_markdown",
    "normalise_answer",
    "out_of_vocabulary",
    "plot_confusions",
    "plot_per_finding_accuracy",
    "plot_recall_curve",
    "random_baseline",
    "recall_at_k",
    "recall_curve",
    "rerank",
    "retrieval_report",
    "score_records",
    "top_confusions",
    "vqa_accuracy",
]
