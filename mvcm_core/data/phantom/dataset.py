"""Write rendered studies to disk: two DICOMs, PNG previews, the report and the findings per study.

Layout per study: ``DIR/<study_id>/{PA.dcm, LL.dcm, PA.png, LL.png, report.txt, findings.json}``.
Study specifications come from the Open-I reports (real text, their MeSH findings) or from the random
sampler; :func:`render_dataset` renders them in worker processes ordered by base anatomy so the
anatomy cache is hit.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from mvcm_core.data.dicom_write import SyntheticPatient, build_radiograph_dataset, save_dataset
from mvcm_core.data.findings import Finding
from mvcm_core.data.phantom.render import DEFAULT_POOL, base_key, render_study
from mvcm_core.data.phantom.sampler import report_text, sample_findings

SERIES = {"PA": 1, "LL": 2}
PHANTOM_VERSION = "1"


@dataclass
class StudySpec:
    """What to render: identifiers, report text and findings."""

    study_id: str
    seed: int
    findings: list[Finding]
    findings_text: str
    impression: str
    source: str  # "openi:<uid>" or "random"
    split: str = "train"


def random_specs(count: int, seed: int) -> list[StudySpec]:
    """``count`` studies with random findings and templated reports."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5A4]))
    specs = []
    for i in range(count):
        findings = sample_findings(rng)
        text, impression = report_text(findings)
        specs.append(StudySpec(f"SIM{seed:04d}-{i:06d}", seed * 1_000_003 + i, findings, text, impression, "random"))
    return specs


def openi_specs(count: int, seed: int, cache_dir: str | None = None) -> list[StudySpec]:
    """``count`` Open-I reports (shuffled by ``seed``) with their parsed findings."""
    from mvcm_core.data.openi import load_openi_corpus

    reports = load_openi_corpus(cache_dir)
    order = np.random.default_rng(seed).permutation(len(reports))[:count]
    specs = []
    for i, index in enumerate(order):
        rep = reports[int(index)]
        findings = rep.findings or [Finding("normal", source="openi/none")]
        specs.append(StudySpec(f"{rep.uid}", seed * 1_000_003 + i, findings, rep.findings_text, rep.impression,
                               f"openi:{rep.uid}", rep.split))
    return specs


def _patient(spec: StudySpec, anatomy: dict[str, Any]) -> SyntheticPatient:
    return SyntheticPatient(name="SIMULATED^PHANTOM", patient_id=f"SIM-{spec.study_id}", sex=anatomy["sex"])


def write_study(out_dir: str | Path, spec: StudySpec, size: int = 256, sop_class: str = "DX",
                pool: int = DEFAULT_POOL) -> dict[str, Any]:
    """Render ``spec`` and write its folder; returns the ``findings.json`` document."""
    result = render_study(spec.findings, spec.seed, size, pool=pool)
    folder = Path(out_dir) / spec.study_id
    folder.mkdir(parents=True, exist_ok=True)
    meta = result["meta"]
    for view in ("PA", "LL"):
        entry = result[view]
        acq = entry["acquisition"]
        ds = build_radiograph_dataset(entry["stored"], study_key=f"mvcm-phantom/{spec.study_id}", view=view,
                                      series_number=SERIES[view], sop_class=sop_class, bits_stored=12,
                                      photometric="MONOCHROME2", window=(2048.0, 4096.0),
                                      pixel_spacing_mm=round(entry["pixel_mm"], 4),
                                      patient=_patient(spec, meta["anatomy"]))
        _add_technique(ds, acq, view)
        save_dataset(ds, folder / f"{view}.dcm")
        Image.fromarray((entry["image"] * 255.0 + 0.5).astype(np.uint8)).save(folder / f"{view}.png")
    (folder / "report.txt").write_text(f"FINDINGS: {spec.findings_text}\n\nIMPRESSION: {spec.impression}\n")
    document = {
        "study_id": spec.study_id, "source": spec.source, "split": spec.split, "phantom_version": PHANTOM_VERSION,
        "findings": [f.to_dict() for f in spec.findings],
        "render": {"seed": meta["seed"], "size": size, "anatomy_id": meta["anatomy_id"], "anatomy": meta["anatomy"],
                   "acquisition": {v: result[v]["acquisition"] for v in ("PA", "LL")}},
        "placements": meta["placements"],
        "visibility": meta["visibility"],
    }
    (folder / "findings.json").write_text(json.dumps(document, indent=1, default=_json_default) + "\n")
    return document


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def _add_technique(ds, acq: dict[str, Any], view: str) -> None:
    """Plausible technical tags (kVp, exposure, grid, magnification) on a dataset before saving."""
    ds.KVP = acq["kvp"]
    ds.ExposureInuAs = int(round(acq["mas"] * 1000))
    ds.Exposure = int(round(acq["mas"]))
    ds.Grid = "FOCUSED" if acq["grid"] else "NONE"
    ds.EstimatedRadiographicMagnificationFactor = 1.05 if view == "PA" else 1.10
    ds.DistanceSourceToPatient = 1800 - (150 if view == "PA" else 300)


def _work(args: tuple) -> list[str]:
    specs, out_dir, size, sop_class, pool = args
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return [write_study(out_dir, spec, size, sop_class, pool)["study_id"] for spec in specs]


def render_dataset(specs: list[StudySpec], out_dir: str | Path, size: int = 256, sop_class: str = "DX",
                   workers: int = 1, pool: int = DEFAULT_POOL, progress: bool = True) -> list[str]:
    """Render and write every study; returns the study ids written."""
    if sop_class not in ("DX", "CR"):
        raise ValueError(f"sop_class must be DX or CR, got {sop_class!r}")
    keys = {s.study_id: base_key(s.findings, s.seed, pool) for s in specs}
    ordered = sorted(specs, key=lambda s: (keys[s.study_id][0], str(keys[s.study_id][1])))  # cache-friendly
    if workers <= 1:
        return [write_study(out_dir, s, size, sop_class, pool)["study_id"]
                for s in tqdm(ordered, desc="phantom", disable=not progress)]
    groups: dict[int, list[StudySpec]] = {}
    for spec in ordered:  # one chunk per base anatomy (and its variants): each is built by one worker
        groups.setdefault(keys[spec.study_id][0], []).append(spec)
    chunks = list(groups.values())
    done: list[str] = []
    with ProcessPoolExecutor(max_workers=workers) as executor, tqdm(total=len(specs), desc="phantom",
                                                                      disable=not progress) as bar:
        for ids in executor.map(_work, [(c, out_dir, size, sop_class, pool) for c in chunks]):
            done.extend(ids)
            bar.update(len(ids))
    return done
