"""Settings of the workflow service (environment prefix SIDECAR_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from sidecar_core.security.dicom_tls import DicomTlsSettings
from workflow_svc.identity.sessions import LoginLimits
from workflow_svc.operations.retention import Options as RetentionOptions


class WorkflowSettings(DicomTlsSettings):
    """The workflow process; the export's DICOM TLS client settings are DicomTlsSettings'."""

    workflow_host: str = "127.0.0.1"
    workflow_port: int = 50052
    login_window_s: float = Field(default=300.0, gt=0,
                                  description="Window over which failed logins are counted")
    login_max_failures_per_user: int = Field(
        default=5, gt=0, description="Failed logins of one username in the window before its "
        "attempts are slowed down (exponential back-off)")
    login_max_failures_per_address: int = Field(
        default=20, gt=0, description="Failed logins from one address in the window before its "
        "attempts are slowed down (exponential back-off)")
    login_backoff_s: float = Field(default=1.0, gt=0, description="The first back-off: the wait "
                                   "after the last failure, doubled by each further failure")
    login_backoff_max_s: float = Field(default=60.0, gt=0,
                                       description="The longest back-off after a failed login")
    password_hash_concurrency: int = Field(
        default=2, ge=1, description="Password hashes (argon2id, 64 MiB each) computed at once "
        "by this process; more logins wait their turn")

    # prior studies (docs/priors.md): the sidecar's own AE title (the C-MOVE destination, the
    # ingest SCP's SIDECAR_DICOM_AE_TITLE), how many priors are kept and how far back
    dicom_ae_title: str = Field(default="SIDECAR", min_length=1, max_length=16)
    priors_limit: int = Field(default=50, ge=1, le=500,
                              description="Most prior studies recorded per study")
    priors_lookback_years: int = Field(default=10, ge=0, le=100, description="How many years "
                                       "back priors are looked for (0: no limit)")

    audit_syslog: str = Field(
        default="", description="IHE ATNA audit repository: tls://, tcp:// or udp://HOST:PORT "
        "(empty: the audit is not exported)")
    audit_syslog_ca: Path | None = Field(
        default=None, description="CA certificates the repository's TLS certificate is checked "
        "against (default: the system's)")
    audit_syslog_cert: Path | None = Field(
        default=None, description="Client certificate presented to the repository (TLS)")
    audit_syslog_key: Path | None = Field(default=None,
                                          description="Key of SIDECAR_AUDIT_SYSLOG_CERT")
    audit_source_id: str = Field(default="sidecar",
                                 description="AuditSourceID of the ATNA audit messages")
    audit_enterprise_site: str = Field(default="", description="AuditEnterpriseSiteID of the "
                                       "ATNA audit messages (the hospital)")

    # retention (docs/operations.md, Retention and purge)
    retention_interval_s: float = Field(
        default=86400.0, ge=0, description="Seconds between retention passes inside the "
        "workflow service (deletion of expired objects and report text, pack compaction); "
        "0 = off (run `sidecar retention run` from cron, a CronJob)")
    retention_compact_threshold: float = Field(
        default=0.5, ge=0, le=1, description="A pack segment whose live fraction is at most "
        "this is rewritten by compaction (0.5: half of it dead or more)")
    retention_compact_min_age_s: float = Field(
        default=60.0, ge=0, description="Pack segments younger than this are left alone")
    retention_compact_grace_s: float = Field(
        default=5.0, ge=0, description="Seconds between the index switch and the removal of "
        "the old segments (readers holding an old key finish)")
    retention_crash_at: str = Field(
        default="", description="Fault tests only: kill the pass at this compaction step")

    def retention_options(self) -> RetentionOptions:
        return RetentionOptions(self.retention_compact_threshold,
                                self.retention_compact_min_age_s,
                                self.retention_compact_grace_s,
                                self.retention_crash_at or None)

    def login_limits(self) -> LoginLimits:
        return LoginLimits(self.login_window_s, self.login_max_failures_per_user,
                           self.login_max_failures_per_address, self.login_backoff_s,
                           self.login_backoff_max_s)
