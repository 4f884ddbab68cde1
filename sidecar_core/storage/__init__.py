"""Object stores of DICOM objects and assets: a folder, append-only packs, an S3 bucket."""
