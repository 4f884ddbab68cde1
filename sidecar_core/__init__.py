"""The shared kernel: settings, database, store schema, bus, audit, storage, DICOM and pixels."""
