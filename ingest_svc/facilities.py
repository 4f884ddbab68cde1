"""Facility lookup for ingest: name or calling AE title → facility id and the rules for its DICOM
senders (allowed addresses, client certificate required), cached briefly (`ttl_s`: a changed
setting applies within that time)."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import select

from sidecar_core.db import Database
from sidecar_core.security.dicom_tls import IPNetwork, parse_allowed_hosts
from sidecar_core.store.models import Facility


@dataclass(frozen=True)
class FacilityRef:
    id: uuid.UUID
    name: str
    ae_title: str | None
    require_client_cert: bool = False
    allowed_hosts: tuple[IPNetwork, ...] = ()  # empty: any address


log = logging.getLogger(__name__)


def _networks(row: Facility) -> tuple[IPNetwork, ...]:
    try:
        return parse_allowed_hosts(row.dicom_allowed_hosts)
    except ValueError:  # the settings writer validates; a hand-edited row allows nobody
        log.error("facility %s: dicom_allowed_hosts is not valid; refusing every address",
                  row.name)
        return (parse_allowed_hosts("255.255.255.255/32")[0],)


class FacilityDirectory:
    """Resolves facilities; a miss re-reads the table so a newly added facility works at once."""

    def __init__(self, db: Database, ttl_s: float = 5.0) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._by_name: dict[str, FacilityRef] = {}
        self._by_ae: dict[str, FacilityRef] = {}
        self._loaded = 0.0

    async def _load(self) -> None:
        async with self.db.read() as session:
            rows = (await session.execute(select(Facility))).scalars().all()
        refs = [FacilityRef(r.id, r.name, r.ae_title, bool(r.dicom_require_client_cert),
                            _networks(r)) for r in rows]
        self._by_name = {r.name: r for r in refs}
        self._by_ae = {r.ae_title: r for r in refs if r.ae_title}
        self._loaded = time.monotonic()

    async def by_name(self, name: str) -> FacilityRef | None:
        if name not in self._by_name or time.monotonic() - self._loaded > self.ttl_s:
            await self._load()
        return self._by_name.get(name)

    async def by_ae_title(self, ae_title: str) -> FacilityRef | None:
        ae_title = ae_title.strip()
        if ae_title not in self._by_ae or time.monotonic() - self._loaded > self.ttl_s:
            await self._load()
        return self._by_ae.get(ae_title)
