"""The audit's hash chains: the canonical form of an event, its hash, and the walk that checks
every chain (docs/audit.md). The database's trigger links events at commit; this module
recomputes the same hashes independently of it."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

    from sidecar_core.db import Database

GENESIS = "0" * 64
VERSION = "sidecar.audit.v1"
# The fields of an event in the order they are hashed (the trigger's order too).
FIELDS = ("chain", "chain_pos", "id", "seq", "type", "at", "facility", "accession",
          "study_instance_uid", "study_id", "actor", "job_id", "attempt", "error_class",
          "error_message", "context", "prev_hash")


def field_text(value: Any) -> str:
    """A field's canonical text: integers in decimal, UUIDs lower-case with hyphens, times in
    UTC as YYYY-MM-DDTHH:MM:SS.ffffffZ, NULL as the empty string, text as it is; `context` is
    given as PostgreSQL's text of the jsonb value (`context::text`)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bool):
        raise TypeError("an audit field is never a bool")
    return str(value)


def canonical(event: dict[str, Any]) -> bytes:
    """`sidecar.audit.v1` then, per field in FIELDS order, `|<UTF-8 byte length>:<text>`."""
    out = [VERSION.encode()]
    for name in FIELDS:
        data = field_text(event.get(name)).encode()
        out.append(b"|%d:" % len(data) + data)
    return b"".join(out)


def event_hash(event: dict[str, Any]) -> str:
    """The hex SHA-256 of an event's canonical form (its prev_hash included)."""
    return hashlib.sha256(canonical(event)).hexdigest()


# What verify reads of each event: the hashed fields (context as PostgreSQL's text) and the
# stored hash.
SELECT_EVENTS = (
    "SELECT chain, chain_pos, id, seq, type, at, facility, accession, study_instance_uid, "
    "study_id, actor, job_id, attempt, error_class, error_message, context::text AS context, "
    "prev_hash, hash FROM audit_events ORDER BY chain NULLS FIRST, chain_pos")
SELECT_HEADS = "SELECT chain, pos, hash, event_id, seq, at FROM audit_chain_heads ORDER BY chain"


@dataclass(frozen=True)
class Head:
    chain: int
    pos: int
    hash: str


@dataclass
class Verdict:
    """The outcome of a walk: how many events were checked, and the first broken one."""

    checked: int = 0
    chains: dict[int, Head] = field(default_factory=dict)
    problem: str = ""
    event: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.problem

    def line(self) -> str:
        if self.ok:
            heads = ", ".join(f"chain {h.chain} at {h.pos} {h.hash[:16]}…"
                              for h in self.chains.values() if h.pos)
            return (f"audit chain intact: {self.checked} events checked in "
                    f"{len(self.chains)} chains" + (f" ({heads})" if heads else ""))
        e = self.event or {}
        named = (f"event {e.get('id')} (seq {e.get('seq')}, type {e.get('type')}, at "
                 f"{field_text(e.get('at'))}, chain {e.get('chain')} position "
                 f"{e.get('chain_pos')})") if e else "the chain head"
        return f"audit chain broken at {named}: {self.problem}"


def walk(events: Iterable[dict[str, Any]], heads: Iterable[dict[str, Any]]) -> Verdict:
    """Checks events ordered by (chain, chain_pos): each one's hash is the hash of its fields,
    its prev_hash the hash of the event before it in its chain (the genesis for the first),
    positions follow one another without a gap, and each chain ends at its recorded head."""
    verdict = Verdict()
    recorded = {int(h["chain"]): h for h in heads}
    last: dict[int, Head] = {c: Head(c, 0, GENESIS) for c in recorded}

    def broken(problem: str, event: dict[str, Any] | None) -> Verdict:
        verdict.problem, verdict.event = problem, event
        return verdict

    for event in events:
        chain = event.get("chain")
        if chain is None or event.get("hash") is None:
            return broken("it is in no chain (stored without the chain's trigger)", event)
        before = last.get(chain)
        if before is None:
            return broken(f"chain {chain} has no recorded head", event)
        if event["chain_pos"] != before.pos + 1:
            return broken(f"expected position {before.pos + 1} of chain {chain} (the events "
                          f"between are missing)", event)
        if event["prev_hash"] != before.hash:
            return broken("its prev_hash is not the hash of the event before it", event)
        computed = event_hash(event)
        if computed != event["hash"]:
            return broken(f"its fields hash to {computed[:16]}…, not to its stored hash "
                          f"{str(event['hash'])[:16]}… (changed after it was stored)", event)
        last[chain] = Head(chain, event["chain_pos"], computed)
        verdict.checked += 1
    for chain, head in recorded.items():
        walked = last[chain]
        if (int(head["pos"]), str(head["hash"])) != (walked.pos, walked.hash):
            return broken(f"chain {chain}'s recorded head is position {head['pos']} "
                          f"{str(head['hash'])[:16]}…, but its events end at position "
                          f"{walked.pos} (the last events were deleted, or the head changed)",
                          None)
    verdict.chains = last
    return verdict


def verify(conn: Any) -> Verdict:
    """Walks every chain of the database of a fresh psycopg connection (any role that may read
    the audit), streaming the events; heads and events are read in one snapshot, so events
    committed meanwhile are neither half seen nor taken for tampering."""
    import psycopg
    from psycopg.rows import dict_row

    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    with conn.transaction():
        with conn.cursor(row_factory=dict_row) as cur:
            heads = cur.execute(SELECT_HEADS).fetchall()
        with conn.cursor(name="audit_chain_walk", row_factory=dict_row) as cur:
            cur.itersize = 2000
            cur.execute(SELECT_EVENTS)
            return walk(cur, heads)


async def poll_heads(db: Database, stop: asyncio.Event, interval_s: float = 10.0) -> None:
    """Keeps the `sidecar_audit_chain_head` metric current from the chains' head rows."""
    import asyncio
    import contextlib
    import logging

    from sqlalchemy import text

    from sidecar_core.observability import metrics

    while not stop.is_set():
        try:
            async with db.read() as session:
                rows = (await session.execute(text(
                    "SELECT chain, pos, hash FROM audit_chain_heads ORDER BY chain"))).all()
            metrics.AUDIT_CHAIN_HEADS.rows = [(int(c), int(p), str(h)) for c, p, h in rows]
        except Exception:
            logging.getLogger(__name__).debug("audit chain heads not read", exc_info=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
