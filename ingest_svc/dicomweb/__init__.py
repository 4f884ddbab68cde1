"""DICOMweb domain: STOW-RS multipart parsing and responses, QIDO-RS queries over the index."""
