"""DICOM shared by services: UIDs, DICOM JSON, parsing an instance for the index, C-STORE client."""
