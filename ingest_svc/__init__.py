"""Ingest service: Ingest RPC, DICOM adapters, study completion, object store and DICOMweb reads."""
