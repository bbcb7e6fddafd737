"""The shipped assets: small, every file listed with its sha256, provenance and licence; the served
checkpoint loads, answers and retrieves on the shipped sample studies."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

ASSETS = Path(__file__).resolve().parents[1] / "assets"
CHECKPOINT = ASSETS / "checkpoints" / "mvcm-tiny-phantom"
needs_checkpoint = pytest.mark.skipif(not CHECKPOINT.is_dir(), reason="no shipped checkpoint (python -m training.build_served)")


def test_assets_stay_small():
    sizes = [p.stat().st_size for p in ASSETS.rglob("*") if p.is_file()]
    assert sum(sizes) <= 60 * 2**20 and max(sizes) <= 50 * 2**20


@needs_checkpoint
def test_every_asset_is_listed_with_its_sha256_provenance_and_licence():
    manifest = json.loads((ASSETS / "MANIFEST.json").read_text())
    listed = {entry["path"]: entry for entry in manifest["files"]}
    on_disk = {p.relative_to(ASSETS).as_posix() for p in ASSETS.rglob("*") if p.is_file()} - {"MANIFEST.json"}
    assert on_disk == set(listed)
    for path, entry in listed.items():
        assert hashlib.sha256((ASSETS / path).read_bytes()).hexdigest() == entry["sha256"], path
        assert entry["provenance"] and entry["licence"]


@needs_checkpoint
def test_the_shipped_checkpoint_answers_and_retrieves_on_a_sample_study():
    from mvcm_core.inference import Predictor

    predictor = Predictor.from_pretrained(CHECKPOINT)
    study = sorted(p for p in (ASSETS / "studies").iterdir() if p.is_dir())[0]
    answer = predictor.answer(study, "Is there a pleural effusion?")
    assert answer.answer in ("yes", "no") and answer.in_distribution is True
    assert set(answer.view_contributions) == {"PA", "LATERAL"}
    assert len(predictor.retrieve(study, k=5)["reports"]) == 5


@needs_checkpoint
def test_the_shipped_ood_scorer_accepts_the_samples_and_flags_a_real_radiograph_and_a_non_chest_image(tmp_path):
    import numpy as np
    from PIL import Image
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    from mvcm_core.inference import Predictor

    predictor = Predictor.from_pretrained(CHECKPOINT)
    studies = sorted(p for p in (ASSETS / "studies").iterdir() if p.is_dir())
    accepted = [predictor.answer(study, "Is the heart enlarged?").in_distribution for study in studies]
    assert sum(accepted) >= 0.95 * len(accepted)
    data_store = pytest.importorskip("data_store")  # pydicom-data: RG1, a real chest PA (CR)
    real_chest = Path(data_store.__file__).parent / "data" / "RG1_UNCR.dcm"
    assert predictor.answer([real_chest], "Is there a pleural effusion?").in_distribution is False
    head = dcmread(get_testdata_file("MR_small.dcm")).pixel_array.astype(np.float32)  # a head MR slice
    head_png = tmp_path / "head.png"
    Image.fromarray((255 * (head - head.min()) / np.ptp(head)).astype(np.uint8)).resize((256, 256)).save(head_png)
    assert predictor.answer([head_png], "Is there a pleural effusion?").in_distribution is False
