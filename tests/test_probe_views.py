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
