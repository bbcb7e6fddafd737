"""Pretraining end to end on phantom data the test builds: smoke run, exact resume, 2 processes, ablation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from mvcm_core.checkpoint import load_pretrained
from training.build_data import build_dataset
from training.pretrain import main as pretrain_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def phantom_data(tmp_path_factory) -> Path:
    """A small random-report phantom dataset (built once for this module)."""
    return build_dataset(tmp_path_factory.mktemp("data"), size=128, source="random", limit=48, renders=1,
                         seed=0, workers=1, anatomies=2)


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def common(data: Path) -> list[str]:
    return ["--config", "smoke", "--set", f"data.root={data}", "--set", "data.build=null"]


@pytest.mark.slow
def test_smoke_config_trains_every_loss_and_writes_a_checkpoint(phantom_data, tmp_path):
    run = tmp_path / "smoke"
    assert pretrain_main([*common(phantom_data), "--out", str(run)]) == 0
    log = records(run)
    assert len(log) == 40
    terms = [k for k in log[0] if k.endswith("_loss")]
    assert len(terms) == 12  # every objective of the five papers is on, plus the findings auxiliary
    quarter = len(log) // 4
    for term in terms:
        first = np.mean([r[term] for r in log[:quarter]])
        last = np.mean([r[term] for r in log[-quarter:]])
        assert np.isfinite(last) and last < first, f"{term} did not fall: {first:.4f} -> {last:.4f}"
    assert all("lr" in r and r["lr"] > 0 for r in log)
    assert (run / "curves.png").is_file() and (run / "config.resolved.yaml").is_file()
    model = load_pretrained(run / "checkpoint")
    manifest = model.manifest
    assert manifest["metrics"]["steps"] == 40 and "random structured findings" in manifest["provenance"]["reports"]


def test_killed_and_resumed_run_reaches_the_same_weights(phantom_data, tmp_path):
    steps = ["--set", "train.steps=6", "--set", "train.checkpoint_every=0",
             "--set", "model_overrides.vision.timm_kwargs.depth=1"]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    pretrain_main([*common(phantom_data), *steps, "--out", str(full)])
    pretrain_main([*common(phantom_data), *steps, "--set", "train.stop_after=3", "--out", str(resumed)])
    assert not (resumed / "checkpoint").exists() and (resumed / "last.pt").is_file()
    pretrain_main([*common(phantom_data), *steps, "--out", str(resumed), "--resume"])
    a = load_file(str(full / "checkpoint" / "model.safetensors"))
    b = load_file(str(resumed / "checkpoint" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a), "resumed weights differ from the uninterrupted run"
    assert [r["loss"] for r in records(full)] == [r["loss"] for r in records(resumed)]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_on_the_first_step(phantom_data, tmp_path):
    args = [*common(phantom_data), "--set", "train.steps=1", "--set", "train.checkpoint_every=0",
            "--set", "model_overrides.vision.timm_kwargs.depth=1"]
    pretrain_main([*args, "--out", str(tmp_path / "one")])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
               "-m", "training.pretrain", *args, "--out", str(tmp_path / "two")]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = records(tmp_path / "one")[0], records(tmp_path / "two")[0]
    for key in [k for k in one if k.endswith("_loss")] + ["loss", "grad_norm"]:
        assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-5), key


@pytest.mark.slow
def test_ablation_command_switches_each_loss_off_alone(phantom_data, tmp_path, capsys):
    from training.ablate_pretrain import main as ablate_main

    ablate_main(["--config", "smoke", "--steps", "8", "--out", str(tmp_path), "--set", f"data.root={phantom_data}",
                 "--set", "data.build=null", "--set", "model_overrides.vision.timm_kwargs.depth=1"])
    table = (tmp_path / "ablation.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| all") or line.startswith("| no ")]
    assert len(rows) == 13  # all losses + each of the 12 switched off
    assert "| no itm |" in table and "| no findings |" in table and table.count(" off ") == 12
    assert all(row.split("|")[2].strip() == "yes" for row in rows), table


def test_dataset_folder_holds_everything_the_later_stages_need(phantom_data):
    from mvcm_core.data.study_store import StudyStore

    store = StudyStore.load(phantom_data, 128)
    assert store.images.shape[1:] == (2, 128, 128) and store.images.dtype == np.uint8
    assert {r["split"] for r in store.rows} == {"train", "val", "test"}
    qa = json.loads((phantom_data / "qa.json").read_text())
    assert {q["answer_type"] for q in qa} == {"OPEN", "CLOSED"} and all(q["img_name"] for q in qa)
    vocabulary = set(json.loads((phantom_data / "answer_vocab.json").read_text()))
    assert vocabulary == {q["answer"] for q in qa if q["split"] == "train"}  # train answers only
    retrieval = json.loads((phantom_data / "retrieval.json").read_text())
    assert sum(len(v) for v in retrieval.values()) == len(store.rows)


def test_gradient_accumulation_and_bf16_run(phantom_data, tmp_path):
    run = tmp_path / "accum"
    pretrain_main([*common(phantom_data), "--set", "train.steps=2", "--set", "train.batch_size=8",
                   "--set", "train.grad_accum=2", "--set", "train.bf16=true", "--set", "train.checkpoint_every=0",
                   "--set", "model_overrides.vision.timm_kwargs.depth=1", "--out", str(run)])
    log = records(run)
    assert [r["step"] for r in log] == [1, 2] and all(np.isfinite(r["loss"]) for r in log)
