"""The ingest's gRPC servicers: thin protobuf mappings onto receive, DICOMweb and viewports."""
