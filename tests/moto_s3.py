"""moto's standalone S3 server (a real HTTP server speaking the S3 API) on a free loopback port;
it stands in for MinIO, Ceph RGW or AWS S3 in tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.servers import free_port, wait_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "sidecar-test", "AWS_SECRET_ACCESS_KEY": "sidecar-test",
               "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class S3Server:
    endpoint: str
    proc: subprocess.Popen[bytes]

    def url(self, bucket: str, prefix: str = "") -> str:
        """What SIDECAR_OBJECT_STORE_URL takes."""
        return f"s3://{bucket}/{prefix}?endpoint={self.endpoint}"

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="sidecar-test",
                            aws_secret_access_key="sidecar-test")

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                         Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


@contextmanager
def moto_server() -> Iterator[S3Server]:
    port = free_port()
    binary = Path(sys.executable).parent / "moto_server"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    proc = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, 60)
        yield S3Server(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.terminate()
        proc.wait(15)
