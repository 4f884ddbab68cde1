"""Unit tests of sidecar_core.messaging."""
