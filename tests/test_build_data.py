"""training.build_data: lesion depths are recorded, and questions can be regenerated without rendering."""

from __future__ import annotations

import json

from training.build_data import build_dataset, main


def test_refresh_questions_recomputes_missing_depths_and_reproduces_the_questions(tmp_path):
    data = build_dataset(tmp_path / "data", size=32, source="random", limit=40, renders=1, workers=1, anatomies=2)
    rows = [json.loads(line) for line in (data / "studies.jsonl").read_text().splitlines()]
    assert any(row["depths"] for row in rows)  # some random studies carry an opacity, nodule or mass
    qa = json.loads((data / "qa.json").read_text())
    assert any(q["content_type"] == "depth" for q in qa)
    depths = [row["depths"] for row in rows]
    for row in rows:  # a folder built before depths were recorded
        del row["depths"]
    (data / "studies.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (data / "qa.json").write_text("[]")
    assert main(["--out", str(data), "--refresh-questions"]) == 0
    refreshed = [json.loads(line) for line in (data / "studies.jsonl").read_text().splitlines()]
    assert [row["depths"] for row in refreshed] == depths
    assert json.loads((data / "qa.json").read_text()) == qa
    card = json.loads((data / "data_card.json").read_text())
    assert sum(card["questions"].values()) == len(qa)
