"""Ingest service: the Ingest RPC, DICOM adapters, study completion, object store writes and asset workers."""
