"""Settings of the workflow service (environment prefix SIDECAR_)."""

from __future__ import annotations

from sidecar_core.settings import CommonSettings


class WorkflowSettings(CommonSettings):
    workflow_host: str = "127.0.0.1"
    workflow_port: int = 50052
