"""Settings shared by every service; each service subclasses CommonSettings with its own fields."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """Connection settings every service needs (environment prefix SIDECAR_)."""

    model_config = SettingsConfigDict(env_prefix="SIDECAR_", extra="ignore")

    data_dir: Path = Field(default=Path(".data"), description="Root of embedded state")
    database_url: str = Field(default="", description="PostgreSQL URL; empty = embedded")
    nats_url: str = Field(default="", description="NATS URL; empty = embedded")
    triton_url: str = Field(default="", description="Triton gRPC host:port; empty = embedded")
    object_store_dir: Path | None = Field(default=None, description="Defaults to DATA_DIR/objects")
    fsync: bool = Field(default=True, description="fsync objects before acknowledging them")
    log_level: str = "INFO"
    nats_stream_prefix: str = Field(default="SIDECAR", description="Prefix of JetStream streams")
    subject_prefix: str = Field(default="sidecar", description="First token of every subject")
    workflow_address: str = "127.0.0.1:50052"
    ingest_address: str = "127.0.0.1:50051"
    normalizer_address: str = "127.0.0.1:50053"
    model_registry_path: Path | None = Field(
        default=None, description="Model registry YAML; default deploy/models.yaml"
    )

    @property
    def objects_path(self) -> Path:
        return self.object_store_dir or (self.data_dir / "objects")
