"""training.probe_views end to end on a handful of tiny counterfactual studies."""

from __future__ import annotations

import json

from mvcm_core.data.phantom import findings3d
from training.probe_views import main, render_pairs


def test_the_view_probe_renders_balanced_pairs_and_reports_an_auc_per_view(capsys):
    default = findings3d.SMALL_EFFUSION_FILL
    images, labels = render_pairs(4, 32, seed=0, fill=(0.3, 0.35))
    assert images.shape == (4, 2, 32, 32) and labels.tolist() == [0, 1, 0, 1]
    assert findings3d.SMALL_EFFUSION_FILL == default  # the experiment's fill never leaks into later renders
    assert main(["--studies", "8", "--size", "32", "--seconds", "0.2", "--views", "PA", "both",
                 "--term", "opacity", "--zone", "retrocardiac", "--severity", "none"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["view"] for row in rows] == ["PA", "both"]
    assert rows[0]["term"] == "opacity" and rows[0]["zone"] == "retrocardiac" and rows[0]["severity"] is None
    assert all(0.0 <= row["test_auc"] <= 1.0 and row["steps"] >= 1 and row["test_studies"] == 2 for row in rows)


def test_the_view_probe_reads_a_built_dataset_by_question(tmp_path, capsys):
    import numpy as np
    import pytest

    from training.probe_views import data_pairs

    studies = [f"S{i}" for i in range(12)]
    images = np.zeros((12, 2, 16, 16), np.uint8)
    images[:, 1, 0, 0] = np.arange(12)  # tells the studies apart
    np.save(tmp_path / "images_16.npy", images)
    (tmp_path / "data_card.json").write_text(json.dumps({"size": 16}))
    (tmp_path / "studies.jsonl").write_text("".join(json.dumps({"study_id": s}) + "\n" for s in studies))
    qa = [{"study_id": s, "content_type": "depth", "answer": "posterior" if i % 3 else "anterior"}
          for i, s in enumerate(studies) if i != 5] + [{"study_id": "S5", "content_type": "view", "answer": "yes"}]
    (tmp_path / "qa.json").write_text(json.dumps(qa))
    pixels, labels = data_pairs(tmp_path, "depth", "posterior", seed=0)
    assert len(labels) == 11 and 5 not in pixels[:, 1, 0, 0]  # S5 has no depth question
    assert all(label == bool(pixel % 3) for label, pixel in zip(labels, pixels[:, 1, 0, 0]))
    assert main(["--data", str(tmp_path), "--question", "depth", "posterior", "--seconds", "0.2",
                 "--views", "LL"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["view"] == "LL" and row["studies"] == 11 and row["positive_share"] == round(7 / 11, 3)
    with pytest.raises(ValueError, match="needs 8"):
        data_pairs(tmp_path, "view", "yes", seed=0)


def test_the_depth_probe_labels_rendered_lesions_front_or_back(capsys):
    from training.probe_views import render_depth_pairs

    images, labels = render_depth_pairs(6, 32, seed=1)
    assert images.shape[1:] == (2, 32, 32) and len(images) == len(labels) <= 6 and set(labels) <= {0, 1}
    assert main(["--depth", "--term", "opacity", "--studies", "12", "--size", "32", "--seconds", "0.2",
                 "--views", "LL"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["term"] == "opacity" and row["view"] == "LL" and row["studies"] <= 12
