"""DICOMweb over HTTP: multipart, DICOM JSON responses; reaches ingest through its RPCs."""
