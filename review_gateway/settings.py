"""Settings of the review gateway (environment prefix SIDECAR_, like every service)."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path

from pydantic import Field

from review_gateway.auth.tokens import KeySet
from sidecar_core.settings import CommonSettings

SECRET_FILE = "gateway-secret"


class GatewaySettings(CommonSettings):
    """Where the gateway listens and how it signs its bearer tokens."""

    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8080, ge=0, le=65535)
    token_secret: str = Field(
        default="", description="HMAC key of bearer tokens; empty = DATA_DIR/gateway-secret"
    )
    token_ttl_s: int = Field(default=3600, gt=0, description="Lifetime of a bearer token")
    token_previous_secrets: list[str] = Field(
        default_factory=list,
        description="Earlier token secrets still accepted after a rotation (JSON list)")
    cookie_secure: bool | None = Field(
        default=None, description="Secure session cookies; unset = when the request is https")
    revocation_cache_s: float = Field(
        default=5.0, ge=0, description="How long a token checked as not revoked is trusted")
    workflow_timeout_s: float = Field(default=10.0, gt=0, description="Deadline of a workflow RPC")
    health_timeout_s: float = Field(default=2.0, gt=0, description="Deadline of a health check")
    metrics_targets: dict[str, str] = Field(
        default_factory=dict,
        description="Service name → host:port of its metrics, for the admin dashboard (JSON)")
    cors_origins: str = Field(default="", description="Origins (comma-separated, e.g. a "
                              "viewer's http://127.0.0.1:8081) allowed to call the gateway "
                              "from a browser; empty: none; * any")
    viewer_port: int = Field(default=8081, ge=0, le=65535, description="Port of the OHIF "
                             "viewer the review app links to (same host); 0: no link")
    health_ready_files: bool = Field(
        default=True, description="Check the preprocess worker's ready file in DATA_DIR/run "
        "(one host; off where it runs elsewhere, e.g. Kubernetes)")
    dicomweb_max_request_mb: float = Field(default=512.0, gt=0,
                                           description="Largest STOW-RS request body")

    def key_set(self) -> KeySet:
        """The current token key (signs) and the previous ones (still verify), by key id."""
        previous = [p.encode() for p in self.token_previous_secrets]
        previous_file = self.data_dir / (SECRET_FILE + ".previous")
        if previous_file.exists():
            previous += [line.strip().encode() for line in previous_file.read_text().splitlines()
                         if line.strip()]
        return KeySet(self.signing_key(), tuple(previous))

    def signing_key(self) -> bytes:
        """The token secret: configured, or generated once and kept in DATA_DIR (mode 0600)."""
        if self.token_secret:
            return self.token_secret.encode()
        return load_or_create_secret(self.data_dir / SECRET_FILE)


def load_or_create_secret(path: Path) -> bytes:
    """Reads the secret at `path`, creating it atomically (0600) when it does not exist yet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-secret-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):  # another process won: use theirs
                os.link(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    secret = path.read_text().strip()
    if len(secret) < 32:
        raise ValueError(f"{path} holds a token secret shorter than 32 characters")
    return secret.encode()
