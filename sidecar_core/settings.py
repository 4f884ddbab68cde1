"""Settings shared by every service; each service subclasses CommonSettings with its own fields."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sidecar_core.egress import EgressPolicy
from sidecar_core.messaging.nats_auth import NatsAuth
from sidecar_core.messaging.subjects import Topology
from sidecar_core.secret_box import SecretBox
from sidecar_core.security import mesh_tls
from sidecar_core.security.mesh_tls import MeshCredentials
from sidecar_core.security.session_tokens import KeySet, load_key_set, load_verifier_key_set
from sidecar_core.storage.objectstore import ObjectStore

if TYPE_CHECKING:
    from sidecar_core.registry import Registry


class CommonSettings(BaseSettings):
    """Connection settings every service needs (environment prefix SIDECAR_)."""

    model_config = SettingsConfigDict(env_prefix="SIDECAR_", extra="ignore")

    data_dir: Path = Field(default=Path(".data"), description="Root of embedded state")
    database_url: str = Field(default="", description="PostgreSQL URL; empty = embedded")
    nats_url: str = Field(
        default="", description="NATS URL, or a comma-separated list of cluster members; "
        "empty = embedded")
    nats_stream_replicas: int = Field(
        default=1, ge=1, le=5, description="Replicas of every JetStream stream (3 on a cluster)")
    triton_url: str = Field(default="", description="Triton gRPC host:port; empty = embedded")
    object_store_dir: Path | None = Field(default=None, description="Defaults to DATA_DIR/objects")
    object_store_url: str = Field(
        default="", description="s3://BUCKET[/PREFIX]?endpoint=URL&region=R for an S3-compatible "
        "store; empty = the local store in object_store_dir")
    fsync: bool = Field(default=True, description="fsync objects before acknowledging them")
    log_level: str = "INFO"
    otlp_endpoint: str = Field(
        default="", validation_alias=AliasChoices("SIDECAR_OTLP_ENDPOINT",
                                                  "OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="OTLP/HTTP collector, e.g. http://127.0.0.1:4318; empty = no traces")
    log_format: str = Field(default="json", pattern="^(json|text)$",
                            description="json: one object a line with job/study/trace ids")
    instance: str = Field(default="", description="Replica number of this process (`sidecar up "
                          "--replicas`); empty for the first")
    nats_stream_prefix: str = Field(default="SIDECAR", description="Prefix of JetStream streams")
    subject_prefix: str = Field(default="sidecar", description="First token of every subject")
    consumer_overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per durable consumer: ack_wait_s (default 10 s: a running job heartbeats "
                    "every ack_wait/5, so it bounds only how long a dead worker's job waits), "
                    "max_deliver, backoff_s (JSON in the env)",
    )
    metrics_port: int = Field(default=0, ge=0, le=65535,
                              description="Prometheus metrics port of this process; 0 = off")
    metrics_host: str = Field(default="127.0.0.1", max_length=253, description="Address the "
                              "metrics port binds: 0.0.0.0 in a container, so a scraper reaches it")
    max_pixels: int = Field(
        default=2**31, ge=1, description="Pixel budget of one DICOM object: Rows x "
        "Columns x NumberOfFrames above it is refused from the header, never decoded")
    max_pixel_bytes: int = Field(
        default=4 * 2**30, ge=1, description="Pixel budget in bytes: the pixels x "
        "SamplesPerPixel x BitsAllocated / 8 of one object")  # defaults: pixels/budget.py
    workflow_address: str = "127.0.0.1:50052"
    ingest_address: str = "127.0.0.1:50051"
    normalizer_address: str = "127.0.0.1:50053"
    tls_ca: Path | None = Field(
        default=None, description="CA certificate of the mesh (PEM); default DATA_DIR/tls/ca.crt")
    tls_cert: Path | None = Field(
        default=None, description="This process's mesh certificate (PEM); default "
        "DATA_DIR/tls/<service>.crt, which `sidecar up` creates")
    tls_key: Path | None = Field(default=None, description="The key of tls_cert (PEM)")
    nats_tls_ca: Path | None = Field(
        default=None, description="CA certificate (PEM) that signed the NATS server's "
        "certificate, for an external NATS with a PKI of its own (SIDECAR_NATS_TLS_CA); default "
        "the mesh CA (tls_ca). Processes still present their mesh certificate to NATS")
    nats_creds: Path | None = Field(
        default=None, description="NATS credentials of this process (SIDECAR_NATS_CREDS): an "
        "nkey seed file or a .creds file; default DATA_DIR/nats-auth/<user>.nk, which `sidecar "
        "up` creates for the embedded NATS")
    grpc_reflection: bool = Field(
        default=False, description="Serve gRPC server reflection (to operators only)")
    model_registry_path: Path | None = Field(
        default=None, description="Model registry YAML; default deploy/models.yaml"
    )

    token_secret: str = Field(
        default="", description="HMAC key of user session tokens (HS256, a shared secret: "
        "whoever verifies could also sign); empty = EdDSA, the default (the gateway signs with "
        "its private key, workflow and ingest verify with its public key)")
    token_previous_secrets: list[str] = Field(
        default_factory=list,
        description="Earlier HS256 token secrets still accepted after a rotation (JSON list)")
    token_public_keys: str = Field(
        default="", description="PEM files (comma-separated) of the Ed25519 public keys that "
        "verify user session tokens: the gateway's and, after a rotation, earlier ones; empty "
        "= DATA_DIR/token-signing.pub and DATA_DIR/token-signing.previous.pub")
    revocation_cache_s: float = Field(
        default=5.0, ge=0, description="How long a token checked as not revoked is trusted")

    # Outbound rules and secrets at rest (docs/deployment.md, "Outbound destinations").
    egress_allow: str = Field(
        default="", description="Outbound destinations allowed without https (DICOM: TLS) and "
        "on loopback/link-local addresses: comma-separated host[:port], IP or CIDR")
    secret_key: str = Field(
        default="", description="Key that seals secret settings in the database (base64 of 32 "
        "bytes); empty = DATA_DIR/keys/secrets.key, made on first use")
    secret_previous_keys: str = Field(
        default="", description="Earlier secret keys (comma-separated base64) that still open "
        "values sealed before a rotation")

    def egress_policy(self) -> EgressPolicy:
        """The outbound rules (ValueError naming a bad SIDECAR_EGRESS_ALLOW item)."""
        return EgressPolicy.parse(self.egress_allow)

    def secret_box(self) -> SecretBox:
        """What seals and opens secret settings (SecretKeyError for a bad key)."""
        return SecretBox.from_settings(self.secret_key, self.data_dir, tuple(
            k.strip() for k in self.secret_previous_keys.split(",") if k.strip()))

    def token_public_key_files(self) -> list[Path]:
        return [Path(p.strip()) for p in self.token_public_keys.split(",") if p.strip()]

    def token_key_set(self) -> KeySet:
        """The keys that verify user session tokens (the workflow and ingest services): the
        gateway's public key(s), never its private key; the shared secret when token_secret is
        set. TokenKeyError (at start) when there is none."""
        if self.token_secret:
            return load_key_set(self.data_dir, self.token_secret, self.token_previous_secrets)
        return load_verifier_key_set(self.data_dir, self.token_public_key_files(),
                                     self.token_previous_secrets)

    def mesh_credentials(self, service: str) -> MeshCredentials:
        """The CA, certificate and key this process uses on the mesh (mTLS)."""
        return mesh_tls.load(self, service)

    def nats_auth(self, user: str) -> NatsAuth:
        """How this process connects to NATS as `user` (sidecar_core.messaging.permissions):
        its credentials and the mesh's TLS files (the embedded server requires both); the server's
        certificate is checked against nats_tls_ca when set, else the mesh CA."""
        return NatsAuth.of(self.data_dir, user, self.nats_creds, self.nats_tls_ca or self.tls_ca,
                           self.tls_cert, self.tls_key)

    def registry(self) -> Registry:
        """The model registry these settings name (SIDECAR_MODEL_REGISTRY_PATH, else
        deploy/models.yaml): what every service and admin command reads."""
        from sidecar_core.registry import load_registry

        return load_registry(self.model_registry_path)

    def topology(self) -> Topology:
        """The bus topology these settings name (prefixes and consumer overrides)."""
        return Topology(self.subject_prefix, self.nats_stream_prefix, self.consumer_overrides)

    @property
    def objects_path(self) -> Path:
        return self.object_store_dir or (self.data_dir / "objects")

    def object_store(self, **pack_options: int) -> ObjectStore:
        """The object store these settings name (local folder or S3 bucket)."""
        from sidecar_core.storage.s3store import open_object_store

        return open_object_store(self.object_store_url, self.objects_path, self.fsync,
                                 **pack_options)
