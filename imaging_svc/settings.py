"""Settings of the imaging service (environment prefix SIDECAR_): the shared ones so far."""

from __future__ import annotations

from sidecar_core.settings import CommonSettings


class ImagingSettings(CommonSettings):
    """Database, bus and object store come from CommonSettings; nothing of its own yet."""
