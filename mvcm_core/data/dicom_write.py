"""Write projection radiographs as DICOM Part 10 files (pydicom + numpy only, no torch).

Used by the phantom renderer (simulated studies), by the sample studies in ``assets/`` and by the
tests, which build every odd case (MONOCHROME1, signed 12-bit, VOI LUT sequences, RLE, ...) from
:func:`build_radiograph_dataset` and then edit the dataset before :func:`save_dataset`.

Identifiers are synthetic and deterministic: UIDs derive from ``study_key`` through
``pydicom.uid.generate_uid(entropy_srcs=...)``; the patient is a synthetic, de-identified one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import set_pixel_data
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

SOP_CLASSES = {
    "CR": ComputedRadiographyImageStorage,
    "DX": DigitalXRayImageStorageForPresentation,
    "SC": SecondaryCaptureImageStorage,
}
MODALITY = {"CR": "CR", "DX": "DX", "SC": "OT"}
# DICOM CID 4010 (DX View) codes: SNOMED CT code, meaning
VIEW_CODES = {
    "PA": ("399300004", "postero-anterior"),
    "AP": ("399348003", "antero-posterior"),
    "LL": ("399173006", "left lateral"),
    "RL": ("399198007", "right lateral"),
}
# typical display orientation (row direction, column direction) of chest views
PATIENT_ORIENTATION = {"PA": ["L", "F"], "AP": ["R", "F"], "LL": ["P", "F"], "RL": ["A", "F"]}


@dataclass(frozen=True)
class SyntheticPatient:
    """A synthetic, de-identified patient header (never a real person)."""

    name: str = "SIMULATED^PHANTOM"
    patient_id: str = "SIM-0000"
    sex: str = "O"
    age: str = ""


def build_radiograph_dataset(
    pixels: np.ndarray,
    *,
    study_key: str,
    view: str = "PA",
    series_number: int = 1,
    instance_number: int = 1,
    sop_class: str = "DX",
    bits_stored: int = 12,
    photometric: str = "MONOCHROME2",
    window: tuple[float, float] | None = None,
    window_explanation: str = "NORMAL",
    pixel_spacing_mm: float | None = 0.35,
    patient: SyntheticPatient | None = None,
    study_description: str = "CHEST 2 VIEWS",
) -> Dataset:
    """Build a CR / DX / Secondary Capture dataset holding one radiograph.

    Args:
        pixels: ``[rows, cols]`` unsigned or signed integer stored values (already inverted for
            MONOCHROME1 if the caller wants MONOCHROME1 semantics).
        study_key: any string; the study, series and instance UIDs derive from it deterministically.
        view: ``PA``, ``AP``, ``LL`` or ``RL`` (written as ViewPosition and a view code).
        series_number: DICOM SeriesNumber (one series per view is the usual layout).
        instance_number: DICOM InstanceNumber.
        sop_class: ``CR``, ``DX`` (for presentation) or ``SC``.
        bits_stored: significant bits per pixel (BitsAllocated is 8 or 16 from the array dtype).
        photometric: ``MONOCHROME1`` or ``MONOCHROME2``.
        window: (centre, width) written as the file's own VOI window, or None.
        window_explanation: WindowCenterWidthExplanation written beside ``window``.
        pixel_spacing_mm: ImagerPixelSpacing in mm, or None.
        patient: synthetic patient header; defaults to :class:`SyntheticPatient`.
        study_description: StudyDescription.

    Returns:
        A dataset with file meta, ready for :func:`save_dataset`.
    """
    if pixels.ndim != 2 or not np.issubdtype(pixels.dtype, np.integer):
        raise ValueError(f"pixels must be a 2-D integer array, got {pixels.dtype} {pixels.shape}")
    if sop_class not in SOP_CLASSES:
        raise ValueError(f"sop_class must be one of {sorted(SOP_CLASSES)}, got {sop_class!r}")
    patient = patient or SyntheticPatient()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = SOP_CLASSES[sop_class]
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = patient.sex
    if patient.age:
        ds.PatientAge = patient.age
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "Synthetic header: simulated radiograph, no real patient"
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["mvcm-study", study_key])
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.StudyDescription = study_description
    ds.Modality = MODALITY[sop_class]
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["mvcm-series", study_key, view, str(series_number)])
    ds.SeriesNumber = series_number
    ds.SeriesDescription = f"CHEST {view}"
    ds.InstanceNumber = instance_number
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view
    ds.PatientOrientation = PATIENT_ORIENTATION.get(view, ["", ""])
    ds.BurnedInAnnotation = "NO"
    ds.Manufacturer = "MVCM phantom"
    _add_view_code(ds, view)
    if sop_class == "SC":
        ds.ConversionType = "SYN"
        ds.ImageType = ["DERIVED", "SECONDARY"]
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImageLaterality = "U"
        ds.PixelIntensityRelationship = "LIN"
        ds.PixelIntensityRelationshipSign = 1
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.RescaleType = "US"
        ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
        ds.LossyImageCompression = "00"
        ds.KVP = 120 if view == "PA" else 125
        ds.DistanceSourceToDetector = 1800
    if pixel_spacing_mm:
        ds.ImagerPixelSpacing = [pixel_spacing_mm, pixel_spacing_mm]
    set_pixel_data(ds, pixels, photometric, bits_stored)
    ds.SOPInstanceUID = generate_uid(
        entropy_srcs=["mvcm-instance", study_key, view, str(series_number), str(instance_number)]
    )
    if window is not None:
        ds.WindowCenter = float(window[0])
        ds.WindowWidth = float(window[1])
        ds.WindowCenterWidthExplanation = window_explanation
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _add_view_code(ds: Dataset, view: str) -> None:
    """Write ViewCodeSequence (CID 4010) for a known view."""
    if view not in VIEW_CODES:
        return
    code_value, meaning = VIEW_CODES[view]
    item = Dataset()
    item.CodeValue = code_value
    item.CodingSchemeDesignator = "SCT"
    item.CodeMeaning = meaning
    ds.ViewCodeSequence = [item]


def save_dataset(ds: Dataset, path: str | Path, *, rle: bool = False) -> Path:
    """Save a dataset as a DICOM Part 10 file (preamble + file meta), optionally RLE-compressed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if rle:
        ds.compress(RLELossless)
    elif not ds.file_meta.get("TransferSyntaxUID"):
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def write_radiograph(path: str | Path, pixels: np.ndarray, *, rle: bool = False, **kwargs) -> Path:
    """Build and save a radiograph in one call; ``kwargs`` go to :func:`build_radiograph_dataset`."""
    return save_dataset(build_radiograph_dataset(pixels, **kwargs), path, rle=rle)
