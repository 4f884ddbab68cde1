"""Settings of the normalizer service (environment prefix SIDECAR_)."""

from __future__ import annotations

from pydantic import Field

from sidecar_core.settings import CommonSettings


class NormalizerSettings(CommonSettings):
    normalizer_host: str = "127.0.0.1"
    normalizer_port: int = 50053
    inference_max_attempts: int = Field(default=4, description="Triton tries within one job")
    inference_budget_s: float = Field(default=120.0, description="Retry budget within one job")
    circuit_failure_threshold: int = 3
    circuit_cooldown_s: float = 15.0
