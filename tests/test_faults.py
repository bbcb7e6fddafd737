"""Faults: a checkpoint writer killed at random points, missing decoder plugins, a tampered served checkpoint.

(Altered safetensors / manifest bytes refused, and an exception while saving, are proven in
``tests/test_checkpoint.py``; these add a real SIGKILL and the app's view of a tampered checkpoint.)
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
WRITER = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, {tests!r})
    from conftest import TINY_OVERRIDES
    from mvcm_core.checkpoint import save_pretrained
    from mvcm_core.factory import create_model
    torch.manual_seed(0)
    model = create_model("mvcm-tiny", TINY_OVERRIDES)
    step = {start}
    while True:
        with torch.no_grad():
            model.logit_scale.fill_(float(step))
        save_pretrained(model, {dest!r}, metrics={{"step": step}})
        print(step, flush=True)
        step += 1
    """
)


def _step_of(folder: Path) -> int:
    from mvcm_core.checkpoint import load_pretrained

    model = load_pretrained(folder)  # verifies the sha256 of every file first
    step = json.loads((folder / "manifest.json").read_text())["metrics"]["step"]
    assert float(model.logit_scale.detach()) == float(step)  # the weights are the ones the manifest describes
    return step


@pytest.mark.slow
def test_a_writer_killed_mid_checkpoint_never_leaves_a_half_written_one(tmp_path):
    dest = tmp_path / "ck"
    rng = random.Random(0)
    saved = -1
    outcomes = []
    for kill in range(4):
        script = WRITER.format(tests=str(TESTS), start=(saved + 1) * 1000, dest=str(dest))
        writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
        first = writer.stdout.readline()  # one complete save of this writer, then it keeps saving
        assert first.strip(), "the writer died before its first save"
        time.sleep(rng.uniform(0.0, 1.5))
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=60)
        completed = [int(line) for line in [first, *writer.stdout.read().split()] if line.strip()]
        if dest.exists():
            step = _step_of(dest)
            assert step >= completed[-1]  # the last reported save or the one after it, never older
            saved = step // 1000
            outcomes.append("complete")
        else:  # killed between the two renames of the swap: the previous version is beside it
            old = dest.with_name(f".{dest.name}.old")
            assert _step_of(old) >= completed[-1] - 1
            old.rename(dest)
            outcomes.append("previous version kept")
    print(f"\nkilled 4 writers: {outcomes}; leftover staging folders: "
          f"{len([p for p in tmp_path.iterdir() if p.name.startswith('.ck.')])}")


def _import_blocker(blocked: list[str]) -> str:
    return textwrap.dedent(
        f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {blocked!r}:
                    raise ImportError(f"{{name}} is not installed (blocked by the test)")
        sys.meta_path.insert(0, Block())
        """
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("JPEG2000.dcm", "no decoder for JPEG 2000 Image Compression: install pylibjpeg-openjpeg (or python-gdcm)"),
        ("JPEGLSNearLossless_16.dcm", "no decoder for JPEG-LS Lossy (Near-Lossless) Image Compression: "
                                      "install python-gdcm (or pyjpegls)"),
    ],
)
def test_a_missing_decoder_plugin_names_the_package_to_install(pydicom_test_dir, name, expected):
    blocked = ["openjpeg", "gdcm", "pylibjpeg", "libjpeg", "jpeg_ls", "imagecodecs", "rle"]
    script = _import_blocker(blocked) + textwrap.dedent(
        f"""
        from pathlib import Path
        import pydicom
        from pydicom.pixels import get_decoder
        from mvcm_core.data.study import read_file
        syntax = pydicom.dcmread({str(pydicom_test_dir / name)!r}, stop_before_pixels=True).file_meta.TransferSyntaxUID
        if "pillow" in get_decoder(syntax).available_plugins:  # as if Pillow were built without that codec
            get_decoder(syntax).remove_plugin("pillow")
        print(read_file(Path({str(pydicom_test_dir / name)!r})).status)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"rejected: {expected}"
    # with the plugins present the same file decodes (the reason above is about the plugin, not the file)
    from mvcm_core.data.study import read_file

    assert read_file(pydicom_test_dir / name).status == "ok"


def test_the_app_refuses_a_tampered_checkpoint_and_says_why_in_one_line(tiny_model, tmp_path):
    from demo.app import load_predictor
    from mvcm_core.checkpoint import save_pretrained

    folder = save_pretrained(tiny_model, tmp_path / "ck")
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x01
    weights.write_bytes(bytes(data))
    predictor, notice = load_predictor(str(folder))
    assert predictor is None
    assert notice.startswith("CheckpointError: ") and "model.safetensors does not match its sha256" in notice
    assert "\n" not in notice
