"""AI results as DICOM: a Comprehensive 3D SR (TID 1500) per AI run and a SEG for its masks,
derived series of the study written with highdicom, stored and indexed apart from received ones."""
