"""Does a checkpoint's image tower say where a lesion is? Linear probes of its cells, view by view.

``python -m training.probe_trunk --checkpoint CKPT --data DATA [--term opacity] [--json]``

For every study whose lesion lies clearly on one side (left / right) or clearly in the front or the
back of the lung (``mvcm_core.data.positions``), each view's cell tokens are pooled over a 2 × 2 grid
of quadrants, which is what the VQA head's region pooling can read. A logistic regression on one view's
quadrants is scored by 5-fold cross-validated AUC. By geometry the PA should give the side and the
lateral the depth. With position heads (``heads.position_heads``), their own AUC on the val + test
studies is printed beside (they were trained on train).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mvcm_core.data.positions import DEPTH_TERMS, SIDE_TERMS, depth_targets, side_targets


def position_labels(row: dict[str, Any], term: str) -> tuple[float | None, float | None]:
    """``(posterior, right)`` of ``term`` in one study: 1 / 0 when it lies clearly on one side, else None."""
    findings, depths = row.get("findings", []), row.get("depths")
    depth, depth_known = depth_targets(findings, depths)
    side, _ = side_targets(findings, depths)
    d, s = 2 * DEPTH_TERMS.index(term), 2 * SIDE_TERMS.index(term)
    posterior = depth[d + 1] if depth_known[d] and depth_known[d + 1] and depth[d] != depth[d + 1] else None
    right = side[s + 1] if side[s] != side[s + 1] else None
    return posterior, right


@torch.inference_mode()
def quadrant_features(model: torch.nn.Module, store: Any, indices: Sequence[int], batch_size: int = 64
                      ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``[N, V, 4 * Dv]`` quadrant means of each view's cells, and the position heads' logits if any."""
    from mvcm_core.data.batching import image_batch

    features, heads = [], {"side_logits": [], "depth_logits": []}
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        views, labels = zip(*[store.views(i) for i in chunk])
        batch = image_batch(views, labels, model.cfg)
        out = model.encode_study(batch["images"], batch["view_ids"], batch["view_mask"])
        b, v = batch["view_mask"].shape
        tokens = out["view_tokens"].float().view(b, v, -1, out["view_tokens"].shape[-1])  # [B*V, L, D] -> [B, V, L, D]
        cells = tokens[:, :, model.vision.num_prefix_tokens:]  # [B, V, N, D]
        grid = round(cells.shape[2] ** 0.5)
        half = grid // 2
        quads = cells.reshape(b, v, 2, half, 2, half, -1).mean(dim=(3, 5))  # [B, V, N, D] -> [B, V, 2, 2, D]
        features.append(quads.flatten(2).numpy())  # [B, V, 4 * D]
        for key, collected in heads.items():
            if key in out:
                collected.append(out[key].float().numpy())
    return np.concatenate(features), {k: np.concatenate(v) for k, v in heads.items() if v}


def probe(checkpoint: str, data: str, term: str = "opacity", folds: int = 5) -> dict[str, Any]:
    """AUC of the side and the depth of ``term`` from each view's quadrants (and from the position heads)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict

    from mvcm_core.checkpoint import load_pretrained
    from mvcm_core.data.study_store import StudyStore

    model = load_pretrained(checkpoint).eval()
    store = StudyStore.load(data, model.cfg.preprocess.image_size)
    rows = [(i, *position_labels(store.rows[i], term)) for i in store.indices()]
    rows = [r for r in rows if r[1] is not None or r[2] is not None]
    features, heads = quadrant_features(model, store, [r[0] for r in rows])
    held_out = np.array([store.rows[r[0]]["split"] != "train" for r in rows])
    result: dict[str, Any] = {"checkpoint": checkpoint, "term": term, "studies": len(rows)}
    for task, column, key, terms in (("depth", 1, "depth_logits", DEPTH_TERMS), ("side", 2, "side_logits", SIDE_TERMS)):
        keep = np.array([r[column] is not None for r in rows])
        labels = np.array([r[column] for r in rows if r[column] is not None], dtype=int)
        entry: dict[str, Any] = {"n": int(keep.sum()), "positive_rate": round(float(labels.mean()), 3)}
        for slot, view in enumerate(("PA", "LL")):
            scores = cross_val_predict(LogisticRegression(C=0.05, max_iter=2000), features[keep][:, slot], labels,
                                       cv=folds, method="predict_proba")[:, 1]
            entry[f"{view}_auc"] = round(float(roc_auc_score(labels, scores)), 3)
        if key in heads:
            position = 2 * terms.index(term)
            margin = heads[key][keep][:, position + 1] - heads[key][keep][:, position]
            test = held_out[keep]
            entry["head_auc_val_test"] = round(float(roc_auc_score(labels[test], margin[test])), 3)
        result[task] = entry
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Print the probe table (``--json``: the figures)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="a build_data folder whose studies carry depths")
    parser.add_argument("--term", default="opacity", choices=DEPTH_TERMS)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = probe(args.checkpoint, args.data, args.term, args.folds)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['checkpoint']}: {result['studies']} studies with a one-sided or clearly placed {args.term}")
    print("| target | studies | PA quadrants | LL quadrants | position head (val + test) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for task, what in (("side", "right (vs left)"), ("depth", "posterior (vs anterior)")):
        entry = result[task]
        print(f"| {what} | {entry['n']} | {entry['PA_auc']:.3f} | {entry['LL_auc']:.3f} | "
              f"{entry.get('head_auc_val_test', '–')} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
