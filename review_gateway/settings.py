"""Settings of the review gateway (environment prefix SIDECAR_, like every service)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from sidecar_core.security.edge_tls import EdgeSettings
from sidecar_core.security.session_tokens import KeySet, load_key_set, load_signing_key_set


class GatewaySettings(EdgeSettings):
    """Where the gateway listens (HTTPS and trusted proxies: EdgeSettings) and how it signs its
    bearer tokens."""

    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8080, ge=0, le=65535)
    token_ttl_s: int = Field(default=3600, gt=0, description="Lifetime of a bearer token")
    cookie_secure: bool | None = Field(
        default=None, description="Secure session cookies; unset = when HTTPS is on or the "
        "request is https (as a trusted proxy says)")
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
    viewer_public_url: str = Field(
        default="", pattern=r"^(https?://[^\s/?#]+(/[^\s?#]*)?)?$",
        description="The OHIF viewer's URL as a browser reaches it (e.g. behind an Ingress, "
        "https://viewer.hospital.example/); empty: the gateway's own host on viewer_port")
    viewer_code_ttl_s: int = Field(default=60, gt=0, le=300, description="Lifetime of a "
                                   "one-time OHIF hand-over code (exchanged once)")
    viewer_token_ttl_s: int = Field(default=600, gt=0, le=600, description="Lifetime of the "
                                    "OHIF viewer's read-only, one-study DICOMweb token")
    health_ready_files: bool = Field(
        default=True, description="Check the preprocess worker's ready file in DATA_DIR/run "
        "(one host; off where it runs elsewhere, e.g. Kubernetes)")
    max_json_bytes: int = Field(
        default=1024 * 1024, gt=0, description="Largest request body of the JSON API "
        "(SIDECAR_MAX_JSON_BYTES; 413 beyond, refused while reading)")
    max_stow_bytes: int = Field(
        default=2 * 1024**3, gt=0, description="Largest STOW-RS request (SIDECAR_MAX_STOW_BYTES; "
        "streamed to disk part by part, 413 beyond, instances stored before the cut reported)")
    max_object_mb: float = Field(
        default=512.0, gt=0, description="Largest DICOM object in a STOW-RS part (the ingest "
        "service's SIDECAR_MAX_OBJECT_MB; a larger part fails with 0xA700)")

    # Single sign-on (docs/deployment.md, "Single sign-on (OpenID Connect)").
    oidc_issuer: str = Field(default="", max_length=512, description="Issuer URL of the "
                             "hospital's OpenID provider (SIDECAR_OIDC_ISSUER); empty: no SSO")
    oidc_client_id: str = Field(default="", max_length=255, description="The sidecar's client "
                                "id at the provider")
    oidc_client_secret: str = Field(default="", description="Its client secret "
                                    "(client_secret_basic); or SIDECAR_OIDC_CLIENT_SECRET_FILE")
    oidc_client_secret_file: Path | None = Field(default=None, description="A file holding "
                                                 "the client secret")
    oidc_scopes: str = Field(default="openid profile email", description="Scopes asked for")
    oidc_role_claim: str = Field(default="roles", description="Dotted path of the claim that "
                                 "gives the role (Keycloak: realm_access.roles; Entra: roles)")
    oidc_role_map: dict[str, str] = Field(
        default_factory=dict, description="Claim value → radiologist|admin|auditor (JSON); "
        "empty: the values are the role names")
    oidc_facility_claim: str = Field(default="", description="Dotted path of the claim that "
                                     "gives the facilities; empty: none (sees nothing)")
    oidc_facility_map: dict[str, str] = Field(
        default_factory=dict, description="Claim value → facility name (JSON); empty: the "
        "values are the facility names")
    oidc_username_claim: str = Field(default="preferred_username", description="Claim whose "
                                     "value is the username")
    oidc_display_name: str = Field(default="", max_length=64, description="The provider's "
                                   "name on the login page's 'Sign in with …' button")
    oidc_redirect_uri: str = Field(default="", description="The callback URL registered at the "
                                   "provider; empty: this gateway's /api/v1/auth/oidc/callback "
                                   "as the browser reached it")
    oidc_discovery_cache_s: float = Field(default=300.0, ge=0, description="How long the "
                                          "provider's discovery document is trusted")
    oidc_timeout_s: float = Field(default=5.0, gt=0, description="Deadline of a call to the "
                                  "provider")
    local_login: bool = Field(default=True, description="Local accounts' password login, the "
                              "break-glass door (SIDECAR_LOCAL_LOGIN=on|off)")

    def oidc_secret(self) -> str:
        """The client secret, from the setting or its file."""
        if self.oidc_client_secret_file is not None:
            return self.oidc_client_secret_file.read_text().strip()
        return self.oidc_client_secret

    token_signing_key: Path | None = Field(
        default=None, description="The gateway's Ed25519 token signing key (PKCS8 PEM file, "
        "SIDECAR_TOKEN_SIGNING_KEY); default DATA_DIR/token-signing.key, created on first use "
        "with DATA_DIR/token-signing.pub. Only the gateway has it")

    def key_set(self) -> KeySet:
        """The current token key (signs) and the keys that still verify, by key id: the EdDSA
        signing key by default, the shared secret when token_secret is set."""
        if self.token_secret:
            return load_key_set(self.data_dir, self.token_secret, self.token_previous_secrets)
        return load_signing_key_set(self.data_dir, self.token_signing_key,
                                    self.token_public_key_files(), self.token_previous_secrets)
