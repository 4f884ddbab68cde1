"""Client credentials for PACS adapters: issued by the embedded CA into a folder the adapter's
operator hands over (key, certificate, CA), listed, revoked; every change audited."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update

from sidecar_core import audit
from sidecar_core.db import Database
from sidecar_core.errors import AlreadyExists, InvalidArgument, NotFound
from sidecar_core.messaging.subjects import Topology
from sidecar_core.security import pki
from sidecar_core.security.identity import Identity, IdentityError
from sidecar_core.store.models import Facility, MeshCredential

ACTOR = "security"
ADAPTER_DAYS = 365


@dataclass(frozen=True)
class CredentialView:
    serial: str
    kind: str
    name: str
    facility: str
    issued_by: str
    issued_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at <= dt.datetime.now(dt.UTC) else "active"


async def issue_adapter(db: Database, topology: Topology, tls_dir: Path, name: str,
                        facility: str, out_dir: Path, operator: str,
                        days: int = ADAPTER_DAYS) -> CredentialView:
    """Writes `adapter.key`, `adapter.crt` and `ca.crt` into `out_dir` (created 0700; the key
    0600) for adapter `name` of `facility`; audited as `security.credential_issued`."""
    try:
        identity = Identity("adapter", name, facility)
    except IdentityError as exc:
        raise InvalidArgument("INVALID_CREDENTIAL_NAME", str(exc)) from None
    if not 1 <= days <= 825:
        raise InvalidArgument("INVALID_VALIDITY", "a credential is valid 1 to 825 days")
    async with db.read() as s:
        if await s.scalar(select(Facility.id).where(Facility.name == facility)) is None:
            raise NotFound("FACILITY_NOT_FOUND", f"no facility named {facility!r}")
        active = await s.scalar(select(MeshCredential.serial).where(
            MeshCredential.kind == "adapter", MeshCredential.name == name,
            MeshCredential.revoked_at.is_(None)))
    if active is not None:
        raise AlreadyExists("CREDENTIAL_EXISTS", f"adapter {name!r} already holds an active "
                            "credential; revoke it first to issue a new one")
    issued = await asyncio.to_thread(_write_folder, tls_dir, identity, days, out_dir)
    async with db.unit_of_work() as s:
        s.add(MeshCredential(serial=issued.serial, kind="adapter", name=name,
                             facility=facility, issued_by=operator[:128],
                             expires_at=issued.not_after))
        await audit.record(s, topology, "security.credential_issued", ACTOR, context={
            "kind": "adapter", "name": name, "facility": facility, "serial": issued.serial,
            "expires_at": issued.not_after.isoformat(), "operator": operator})
    return CredentialView(issued.serial, "adapter", name, facility, operator,
                          dt.datetime.now(dt.UTC), issued.not_after, None)


def _write_folder(tls_dir: Path, identity: Identity, days: int, out_dir: Path) -> pki.Issued:
    if (out_dir / "adapter.key").exists():
        raise AlreadyExists("CREDENTIAL_FOLDER_USED", f"{out_dir} already holds a key; "
                            "choose an empty folder")
    with pki.locked(tls_dir):
        ca = pki.ensure_authority(tls_dir)
        issued = ca.issue(identity, days=days, server=False)
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    out_dir.chmod(0o700)
    pki.write_issued(out_dir, "adapter", issued)
    pki.write_private(out_dir / "ca.crt", ca.cert_pem, 0o644)
    return issued


async def list_credentials(db: Database) -> list[CredentialView]:
    async with db.read() as s:
        rows = (await s.scalars(select(MeshCredential).order_by(
            MeshCredential.name, MeshCredential.issued_at))).all()
    return [CredentialView(r.serial, r.kind, r.name, r.facility, r.issued_by, r.issued_at,
                           r.expires_at, r.revoked_at) for r in rows]


async def revoke(db: Database, topology: Topology, name: str, operator: str) -> list[str]:
    """Revokes every active credential of adapter `name` (servers refuse it within their
    revocation cache, 5 s); audited as `security.credential_revoked`. Returns the serials."""
    async with db.unit_of_work() as s:
        serials = list(await s.scalars(
            update(MeshCredential)
            .where(MeshCredential.name == name, MeshCredential.revoked_at.is_(None))
            .values(revoked_at=dt.datetime.now(dt.UTC))
            .returning(MeshCredential.serial)))
        if not serials:
            raise NotFound("CREDENTIAL_NOT_FOUND", f"no active credential named {name!r}")
        await audit.record(s, topology, "security.credential_revoked", ACTOR, context={
            "name": name, "serials": serials, "operator": operator})
    return serials
