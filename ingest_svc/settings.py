"""Settings of the ingest service (environment prefix SIDECAR_)."""

from __future__ import annotations

from pydantic import Field

from sidecar_core.security.dicom_tls import DicomTlsSettings


class IngestSettings(DicomTlsSettings):
    """The ingest process; its DICOM TLS port and certificates are DicomTlsSettings'."""

    ingest_host: str = "127.0.0.1"
    ingest_port: int = 50051
    dicom_host: str = "127.0.0.1"
    dicom_port: int = Field(default=11112, description="DIMSE C-STORE SCP port; 0 disables it")
    dicom_ae_title: str = "SIDECAR"
    max_object_mb: float = Field(default=512.0, description="Largest accepted DICOM object")
    max_associations: int = Field(default=16, description="Concurrent DIMSE associations")
    default_quiet_period_s: float = Field(default=5.0, description="Study completion quiet period")
    completion_poll_s: float = 0.25
    audit_spool_replay_s: float = Field(
        default=5.0, description="How often audit events spooled during a database outage "
        "are retried")
    pack_segment_mb: float = Field(
        default=1024.0, description="Size at which a received-object pack segment rolls over")
    pack_allocate_mb: float = Field(
        default=16.0, description="Disk space a pack segment allocates ahead at a time")
    dicom_max_pdu_bytes: int = Field(
        default=262144, description="Largest P-DATA PDU the SCP accepts; 0 = no limit"
    )
    dicom_network_timeout_s: float = Field(
        default=60.0, description="Idle DIMSE connection timeout"
    )
    dicom_store_timeout_s: float = Field(
        default=120.0, description="Longest a stored object's database work (statement timeout) "
        "or its audit / duplicate path may take before 0xA700"
    )
