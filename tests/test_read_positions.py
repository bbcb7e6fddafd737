"""The position heads read by rule: the bound on what the second view can add to questions about where a lesion is."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY_OVERRIDES

from mvcm_core.checkpoint import save_pretrained
from mvcm_core.config import POSITION_DEPTH_TERMS, POSITION_SIDE_TERMS
from mvcm_core.factory import create_model
from training import read_positions
from training.read_positions import answer, fallbacks

FALLBACK = {"side": "left", "closed": "no", "depth": "posterior"}
BOTH, PA, LATERAL = ("frontal", "lateral"), ("frontal",), ("lateral",)


def heads(term: str, left: float, right: float, anterior: float = 0.5, posterior: float = 0.5):
    side, depth = np.full((len(POSITION_SIDE_TERMS), 2), 0.5), np.full((len(POSITION_DEPTH_TERMS), 2), 0.5)
    side[POSITION_SIDE_TERMS.index(term)] = (left, right)
    if term in POSITION_DEPTH_TERMS:
        depth[POSITION_DEPTH_TERMS.index(term)] = (anterior, posterior)
    return side, depth


def question(kind: str, text: str, reply: str, term: str = "opacity") -> dict:
    return {"content_type": kind, "question": text, "answer": reply, "term": term, "study_id": "S"}


def test_the_rule_calls_side_from_the_pa_and_depth_from_the_lateral_and_falls_back_without_them():
    right_front = heads("opacity", 0.1, 0.9, anterior=0.8, posterior=0.2)
    which = question("laterality", "Which side is the lung opacity on?", "right")
    on_left = question("laterality", "Is the lung opacity on the left?", "no")
    depth = question("depth", "Is the lung opacity anterior or posterior?", "anterior")
    where = question("localisation", "Where is the lung opacity: which side, front or back?", "right anterior")
    assert [answer(q, *right_front, BOTH, 0.5, FALLBACK) for q in (which, on_left, depth, where)] == \
        ["right", "no", "anterior", "right anterior"]
    assert [answer(q, *right_front, PA, 0.5, FALLBACK) for q in (depth, where)] == ["posterior", "right posterior"]
    assert [answer(q, *right_front, LATERAL, 0.5, FALLBACK) for q in (which, on_left, where)] == \
        ["left", "no", "left anterior"]
    both_sides = heads("pleural effusion", 0.9, 0.8)
    effusion = question("laterality", "Is the effusion left, right or bilateral?", "bilateral", "pleural effusion")
    assert answer(effusion, *both_sides, BOTH, 0.7, FALLBACK) == "bilateral"
    assert answer(effusion, *both_sides, BOTH, 0.85, FALLBACK) == "left"
    per_lung = question("localisation", "Is the lung opacity in the right lung anterior or posterior?", "anterior")
    assert answer(per_lung, *right_front, BOTH, 0.5, FALLBACK) == "anterior"


def test_fallbacks_are_the_training_majorities_per_kind():
    train = [question("laterality", "q", "right"), question("laterality", "q", "right"),
             question("laterality", "q", "left"), question("laterality", "q", "yes"),
             question("depth", "q", "posterior"), question("localisation", "q", "left anterior"),
             question("localisation", "q", "left anterior"), question("laterality", "q", "left", "cardiomegaly")]
    assert fallbacks(train) == {"side": "left", "closed": "yes", "depth": "anterior"}  # cardiomegaly: not read


def test_the_command_reads_a_checkpoints_heads_on_built_data(tmp_path, capsys):
    from training.build_data import build_dataset

    torch.manual_seed(0)
    plain = save_pretrained(create_model("mvcm-tiny", TINY_OVERRIDES), tmp_path / "plain")
    located = save_pretrained(create_model("mvcm-tiny", {**TINY_OVERRIDES, "heads": {
        **TINY_OVERRIDES["heads"], "position_heads": True}}), tmp_path / "located")
    data = build_dataset(tmp_path / "data", size=32, source="random", limit=60, renders=1, workers=1, anatomies=1)
    assert read_positions.main(["--checkpoint", str(located), "--data", str(data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    qa = [q for q in json.loads((data / "qa.json").read_text()) if q["split"] == "test" and read_positions.readable(q)]
    views = result["views"]
    assert views["both"]["all"]["n"] == len(qa) > 0
    depth = [q for q in qa if q["content_type"] == "depth"]
    if depth:  # without the lateral every depth call is the training majority
        expected = np.mean([q["answer"] == result["fallback"]["depth"] for q in depth])
        assert views["PA only"]["depth"]["accuracy"] == pytest.approx(expected)
    assert views["both"]["laterality"] == views["PA only"]["laterality"]  # the lateral adds nothing to the side
    assert read_positions.main(["--checkpoint", str(located), "--data", str(data)]) == 0
    assert "| laterality |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no position heads"):
        read_positions.main(["--checkpoint", str(plain), "--data", str(data)])
