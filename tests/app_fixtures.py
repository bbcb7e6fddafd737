"""Helpers shared by the app tests: a tiny served checkpoint with an index, studies, a launched app.

Not a conftest: the test modules import these and define their own (module-scoped) fixtures.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

ANSWERS = ["no", "yes", "left", "right", "bilateral", "cardiomegaly"]
REPORTS = [
    {"report_uid": f"R{i}", "text": text, "findings": findings, "attribution": "synthetic test report"}
    for i, (text, findings) in enumerate(
        [
            (
                "FINDINGS: Small left pleural effusion.\n\nIMPRESSION: Left effusion.",
                [{"term": "pleural effusion", "side": "left"}],
            ),
            ("FINDINGS: The heart is enlarged.\n\nIMPRESSION: Cardiomegaly.", [{"term": "cardiomegaly"}]),
            ("No acute cardiopulmonary abnormality.", []),
            ("Right upper lobe nodule.", [{"term": "nodule", "side": "right"}]),
            ("Pacemaker in place; lungs clear.", [{"term": "device"}]),
            ("Hyperinflated lungs consistent with emphysema.", [{"term": "emphysema"}]),
        ]
    )
]
PHI_MARKERS = {
    "PatientName": "ZZPHIMARKER^NAME",
    "PatientID": "ZZPHIMARKER-ID-4711",
    "PatientBirthDate": "19010203",
    "AccessionNumber": "ZZPHIACC0815",
    "InstitutionName": "ZZPHIMARKER General Hospital",
}


def build_served(root: Path) -> tuple[Path, Path]:
    """A tiny VQA checkpoint with a 6-report index, and a 2-view DICOM study (PA.dcm, LL.dcm, size 64).

    Returns:
        (checkpoint folder, study folder holding only the two DICOMs).
    """
    import torch
    from conftest import TINY_OVERRIDES

    from mvcm_core.checkpoint import save_pretrained
    from mvcm_core.cli.main import main as mvcm
    from mvcm_core.data.phantom.dataset import random_specs, write_study
    from training.finetune_vqa import build_vqa_model

    torch.manual_seed(0)
    model = build_vqa_model("mvcm-tiny", ANSWERS, True, TINY_OVERRIDES)
    checkpoint = save_pretrained(model, root / "checkpoint")
    reports = root / "reports.jsonl"
    reports.write_text("\n".join(json.dumps(r) for r in REPORTS) + "\n")
    assert (
        mvcm(["index", str(reports), "--out", str(checkpoint / "index"), "--checkpoint", str(checkpoint)])
        == 0
    )
    spec = random_specs(1, seed=3)[0]
    write_study(root / "studies", spec, size=64)
    study = root / "studies" / spec.study_id
    for preview in ("PA.png", "LL.png"):
        (study / preview).unlink(missing_ok=True)
    return checkpoint, study


def examples_root(study: Path, root: Path) -> Path:
    """An ``assets/studies``-like folder holding ``study`` as the one example."""
    target = root / "examples" / study.name
    shutil.copytree(study, target)
    return target.parent


def phi_study(folder: Path, markers: dict[str, str] | None = None) -> list[Path]:
    """Two DICOMs (PA + LL, one study) whose patient tags hold marker strings."""
    import numpy as np

    from mvcm_core.data.dicom_write import build_radiograph_dataset, save_dataset

    markers = markers or PHI_MARKERS
    rng = np.random.default_rng(0)
    paths = []
    for number, view in enumerate(("PA", "LL"), start=1):
        pixels = (rng.random((64, 56)) * 4000).astype(np.uint16)
        ds = build_radiograph_dataset(
            pixels, study_key="phi-study", view=view, series_number=number, window=(2048.0, 4096.0)
        )
        for keyword, value in markers.items():
            setattr(ds, keyword, value)
        ds.ReferringPhysicianName = markers["PatientName"]
        paths.append(save_dataset(ds, folder / f"{view}.dcm"))
    return paths


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def launched(demo: Any) -> Iterator[str]:
    """Launch a Blocks app on a free loopback port; yield its URL; close it afterwards."""
    from demo.app import LAUNCH_KWARGS

    _, url, _ = demo.launch(
        prevent_thread_lock=True,
        server_name="127.0.0.1",
        server_port=free_port(),
        quiet=True,
        **LAUNCH_KWARGS,
    )
    try:
        yield url
    finally:
        demo.close()
