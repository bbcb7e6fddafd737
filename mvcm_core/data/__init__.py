"""Data: DICOM reading (no torch), study grouping, report corpora, phantom and dataset readers."""
