"""The application layer: the `sidecar` command and the embedded runtime that starts the mesh."""
