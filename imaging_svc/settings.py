"""Settings of the imaging service (environment prefix SIDECAR_)."""

from __future__ import annotations

from pydantic import Field

from sidecar_core.settings import CommonSettings


class ImagingSettings(CommonSettings):
    """Database, bus and object store come from CommonSettings; the early decode's bounds."""

    decode_cache_mb: int = Field(
        default=1024, ge=0, le=65536,
        description="memory for instances decoded on arrival, before their study completes "
                    "(imaging_svc/assets/early_decode.py); 0 turns the early decode off")
    decode_cache_ttl_s: float = Field(
        default=600.0, gt=0, le=86400,
        description="an instance decoded on arrival is dropped after this many seconds")
    model_input_durable_first: bool = Field(
        default=False,
        description="write the model input durably before announcing it (as before issue 22 "
                    "item 1); by default it is announced once written and synced beside "
                    "inference, the job acknowledged once it is durable")
