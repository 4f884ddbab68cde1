"""A remote DICOM application entity the sidecar connects to: a facility's PACS (export by
C-STORE, priors by C-FIND and C-MOVE)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DicomPeer:
    """AE title and address; `tls`: DICOM TLS (PS3.15 Annex B, the facility's `pacs_tls`);
    `address`: the IP the egress policy checked, to connect to (default: `host`)."""

    ae_title: str
    host: str
    port: int
    tls: bool = False
    address: str = ""

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    @property
    def connect_host(self) -> str:
        return self.address or self.host

    @classmethod
    def pacs_of(cls, facility: Any) -> DicomPeer | None:
        """The facility's PACS (`sidecar facility set F --pacs AET@HOST:PORT [--pacs-tls on]`),
        or None when it has none."""
        if not (facility.pacs_host and facility.pacs_port and facility.pacs_ae_title):
            return None
        return cls(facility.pacs_ae_title, facility.pacs_host, facility.pacs_port,
                   bool(facility.pacs_tls))
