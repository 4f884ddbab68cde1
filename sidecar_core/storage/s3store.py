"""The object store in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW): one object per key.

Chosen by `SIDECAR_OBJECT_STORE_URL=s3://BUCKET[/PREFIX]?endpoint=URL&region=R`; credentials
come from the usual AWS chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, an IAM
role). Every key is content-addressed (`sha256/<hex>`), received DICOM objects included: one
S3 object per received object, written whole by one PUT (S3 never shows half an object), so
`sidecar objects verify` checks each against its name.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sidecar_core.storage.objectstore import ObjectStore, RecordWriter


class S3ObjectStore(ObjectStore):
    """ObjectStore's operations on a bucket (thread-safe: boto3 clients are)."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None,
                 region: str | None = None, client: Any = None) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.root = Path(f"/s3/{bucket}/{self.prefix}")  # for messages only
        self.fsync = True  # a PUT is durable when S3 answers
        self.client = client or boto3.client(
            "s3", endpoint_url=endpoint_url, region_name=region or "us-east-1",
            config=Config(retries={"max_attempts": 4, "mode": "standard"},
                          max_pool_connections=64, connect_timeout=5, read_timeout=30))

    @classmethod
    def from_url(cls, url: str) -> S3ObjectStore:
        """`s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=eu-west-1`."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"not an S3 object store URL: {url!r}")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        return cls(parts.netloc, parts.path, query.get("endpoint"), query.get("region"))

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _name(self, key: str) -> str:
        self.check_key(key)
        return self.prefix + key

    def put(self, data: bytes) -> str:
        key = self.key_for(data)
        self._put(key, data)
        return key

    def put_unsynced(self, data: bytes, *, repair: bool = False) -> str:
        """A PUT is durable when S3 answers: the same as `put`."""
        return self.put(data)

    def sync(self, key: str) -> None:
        """Nothing to do: the PUT was durable."""

    def _put(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._name(key), Body=data,
                                   ChecksumAlgorithm="SHA256")
        except (BotoCoreError, ClientError) as exc:
            raise OSError(f"object store {self.describe()}: {_short(exc)}") from exc

    def get(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            reply = self.client.get_object(Bucket=self.bucket, Key=self._name(key))
            return bytes(reply["Body"].read())
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                raise FileNotFoundError(key) from exc
            raise OSError(f"object store {self.describe()}: {_short(exc)}") from exc
        except BotoCoreError as exc:
            raise OSError(f"object store {self.describe()}: {_short(exc)}") from exc

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._name(key))
            return True
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                return False
            raise OSError(f"object store {self.describe()}: {_short(exc)}") from exc

    def delete(self, key: str) -> bool:
        """Deletes the object by its key (retention, purge); S3 answers alike whether it
        existed, so True means the request succeeded."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._name(key))
        except (BotoCoreError, ClientError) as exc:
            raise OSError(f"object store {self.describe()}: {_short(exc)}") from exc
        return True

    def pack_writer(self) -> RecordWriter:
        return _S3RecordWriter(self)


class _S3RecordWriter:
    """The received-object writer on S3: each record is its own object, durable on return."""

    def __init__(self, store: S3ObjectStore) -> None:
        self.store = store

    def append(self, data: bytes, digest: str | None = None) -> str:
        key = "sha256/" + (digest or hashlib.sha256(data).hexdigest())
        self.store._put(key, data)
        return key

    def keep(self) -> None:
        """Nothing to do: an object not kept is the same content a retry writes again."""

    def close(self) -> None:
        """Nothing held open."""


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300]


def open_object_store(url: str, local_root: Path, fsync: bool = True,
                      **pack_options: int) -> ObjectStore:
    """The store a URL names: `s3://...` a bucket; empty (or a folder path) the local store."""
    if url.startswith("s3://"):
        return S3ObjectStore.from_url(url)
    if url.startswith("file://"):
        url = url.removeprefix("file://")
    return ObjectStore(Path(url) if url else local_root, fsync, **pack_options)
