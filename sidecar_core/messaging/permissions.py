"""Who may publish and subscribe what on the bus: one NATS user per process, derived from the
Topology (subjects, streams and the durable consumers each process runs).

The embedded nats-server's configuration, the `deploy/` configuration of an external one and
each process's outbox relay (which publishes only the rows its user may publish) all read this
table.

What every JetStream user is allowed, and why:
- `$JS.API.INFO`, `$JS.API.STREAM.{CREATE,UPDATE,INFO}.<stream>` of the sidecar's four streams
  and its redelivery-cause bucket: each process declares the topology when it connects (the
  first one up creates it). No user but the operator may delete or purge a stream.
- per durable consumer the process runs: `$JS.API.CONSUMER.{INFO,CREATE,DURABLE.CREATE}` and
  `$JS.API.CONSUMER.MSG.NEXT` (pull fetch) of that durable, `$JS.ACK.<stream>.<durable>.>`
  (ack, nak, in progress, term), the dead-letter subject of what it consumes, and the keys
  `<durable>.*` of the redelivery-cause bucket (`$KV.<bucket>.<durable>.*`, read back by direct
  get or `$JS.API.STREAM.MSG.GET` of the bucket's stream);
- the application subjects it is the source of (its outbox rows), and `<prefix>.audit.v1.>`;
- subscribe only to its own reply inboxes, `_INBOX.<user>.>` (a process connects with that inbox
  prefix, so no user reads another's replies);
- a core NATS notice (no stream: `notice.v1.instances_stored`) is published by exactly one user
  and subscribed to by exactly one (`_NOTICES`).

The workflow also reads and deletes dead letters (`$JS.API.STREAM.MSG.{GET,DELETE}` of the
dead-letter stream) and lists consumers (`$JS.API.CONSUMER.LIST`, the queue metrics). It does
not publish other processes' subjects: a re-driven dead letter is an outbox row, which the relay
of the process whose subject it is publishes. The gateway only listens to audit events (live
worklist updates). The `operator` user (tests, bench, an administrator's `nats` CLI) may do
everything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sidecar_core.messaging.subjects import (
    AI_RUN_FINDINGS_STORED,
    AI_RUN_FINISHED,
    ASSET_PREPROCESSED,
    INSTANCES_STORED,
    JOB_AI_RUN,
    JOB_EXPORT,
    JOB_HANDOFF,
    JOB_OVERLAY,
    JOB_PREPROCESS,
    JOB_PRIORS,
    REVIEW_CHANGED,
    STUDY_RECEIVED,
    ConsumerSpec,
    Topology,
)

# One user per NATS client process (the hl7 listener has no bus connection: its outbox rows are
# published by the workflow's relay).
USERS = ("workflow", "ingest", "preprocess", "normalizer", "gateway", "operator")
REDELIVERY_BUCKET = "REDELIVERY"
# The user whose outbox relay is woken by a transaction that queued audit events only (any
# relay may publish them; the others take them with their own rows and in their polls).
AUDIT_RELAY = "workflow"


@dataclass(frozen=True)
class Permissions:
    """Subjects (NATS wildcards allowed) a user may publish to and subscribe to."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    # The application subjects among `publish`: what this user's outbox relay publishes.
    outbox: tuple[str, ...] = ()


def inbox_prefix(user: str) -> str:
    """The reply-inbox prefix a process connects with (`nats.connect(inbox_prefix=...)`)."""
    return f"_INBOX.{user}"


def bucket(topology: Topology) -> str:
    """The key-value bucket of redelivery causes (sidecar_core.messaging.bus)."""
    return f"{topology.stream_prefix}_{REDELIVERY_BUCKET}"


def _kv_stream(topology: Topology) -> str:
    return _token(f"KV_{bucket(topology)}")


def _token(name: str) -> str:
    """A stream name as one subject token; a wildcard prefix (a test server shared by many
    prefixes) makes it `*`."""
    return "*" if "*" in name else name


def _consumed(topology: Topology, spec: ConsumerSpec) -> tuple[str, ...]:
    if spec.filter_subject:
        return (spec.filter_subject,)
    return next(s.subjects for s in topology.streams if s.name == spec.stream)


def _consumer(topology: Topology, spec: ConsumerSpec) -> list[str]:
    stream, durable, kv = _token(spec.stream), spec.durable, _token(bucket(topology))
    api = "$JS.API.CONSUMER"
    allowed = [f"{api}.INFO.{stream}.{durable}", f"{api}.CREATE.{stream}.{durable}",
               f"{api}.CREATE.{stream}.{durable}.>", f"{api}.DURABLE.CREATE.{stream}.{durable}",
               f"{api}.MSG.NEXT.{stream}.{durable}", f"$JS.ACK.{stream}.{durable}.>",
               f"$KV.{kv}.{durable}.*",
               f"$JS.API.DIRECT.GET.{_kv_stream(topology)}.$KV.{kv}.{durable}.*"]
    if spec.stream != topology.dlq_stream:  # no letter about a letter (Bus.dead_letter)
        allowed += [topology.dlq_subject(s) for s in _consumed(topology, spec)]
    return allowed


def _common(topology: Topology) -> list[str]:
    streams = [_token(s.name) for s in topology.streams] + [_kv_stream(topology)]
    return ["$JS.API.INFO",
            *(f"$JS.API.STREAM.{op}.{s}" for s in streams for op in ("CREATE", "UPDATE", "INFO")),
            # a bucket key read without direct get (the payload names the key)
            f"$JS.API.STREAM.MSG.GET.{_kv_stream(topology)}"]


# Core NATS notices (no stream, no outbox): publisher → its one subscriber.
_NOTICES: dict[str, tuple[str, str]] = {INSTANCES_STORED: ("ingest", "preprocess")}


def _notices(topology: Topology, user: str, side: int) -> list[str]:
    """The notice subjects `user` publishes (side 0) or subscribes to (side 1)."""
    return [topology.subject(s) for s, users in _NOTICES.items() if users[side] == user]


# What each process is the source of (its outbox rows) and the durables it consumes.
_SOURCES: dict[str, tuple[str, ...]] = {
    "workflow": (JOB_PREPROCESS, JOB_AI_RUN, JOB_OVERLAY, JOB_HANDOFF, JOB_EXPORT,
                 AI_RUN_FINDINGS_STORED, REVIEW_CHANGED, JOB_PRIORS),
    "ingest": (STUDY_RECEIVED,),
    "preprocess": (ASSET_PREPROCESSED,),
    "normalizer": (AI_RUN_FINISHED,),
}


def consumers(topology: Topology, user: str) -> tuple[ConsumerSpec, ...]:
    """The durable consumers the process of `user` runs (its main.py)."""
    t = topology
    return {
        "workflow": (t.workflow_events(), t.handoff_jobs(), t.export_jobs(),
                     t.priors_jobs(), t.dead_letter_audit()),
        "preprocess": (t.preprocess_jobs(), t.overlay_jobs(), t.derived_results_runs(),
                       t.derived_results_reviews()),
        "normalizer": (t.ai_run_jobs(),),
    }.get(user, ())


def _dedupe(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def table(topology: Topology) -> dict[str, Permissions]:
    """Every user's permissions under `topology`."""
    out: dict[str, Permissions] = {}
    audit = topology.audit_subject(">")
    for user in USERS:
        if user == "operator":
            out[user] = Permissions((">",), (">",))
            continue
        inbox = (f"{inbox_prefix(user)}.>",)
        if user == "gateway":  # live worklist updates: a plain subscription to audit events
            out[user] = Permissions((), (*inbox, audit))
            continue
        outbox = (*(topology.subject(s) for s in _SOURCES[user]), audit)
        publish = [*_common(topology), *outbox, *_notices(topology, user, 0)]
        for spec in consumers(topology, user):
            publish += _consumer(topology, spec)
        if user == "workflow":
            dlq = _token(topology.dlq_stream)
            publish += [f"$JS.API.STREAM.MSG.GET.{dlq}", f"$JS.API.STREAM.MSG.DELETE.{dlq}",
                        *(f"$JS.API.CONSUMER.LIST.{_token(s.name)}" for s in topology.streams)]
        subscribe = (*inbox, *_notices(topology, user, 1))
        out[user] = Permissions(_dedupe(publish), subscribe, outbox)
    return out


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, a final `>` one or more."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def may_publish(topology: Topology, user: str, subject: str) -> bool:
    return any(matches(p, subject) for p in table(topology)[user].publish)


def subject_regex(patterns: Iterable[str]) -> str:
    """A POSIX regular expression (PostgreSQL `~`) matching the subjects of `patterns`."""
    parts = []
    for pattern in patterns:
        tokens = []
        for token in pattern.split("."):
            tokens.append({"*": r"[^.]+", ">": r"[^.]+(\.[^.]+)*"}.get(token, re.escape(token)))
        parts.append(r"\.".join(tokens))
    return "^(" + "|".join(parts) + ")$" if parts else "^$.^"  # no pattern: matches nothing


def authorization(topology: Topology, users: Mapping[str, str]) -> str:
    """nats-server's `authorization` block: one nkey user per entry of `users` (user name →
    its public nkey, or a `$VARIABLE` nats-server reads from its environment), with the table's
    permissions. There is no `no_auth_user`: a connection must authenticate."""
    perms = table(topology)
    lines = ["authorization {", "  users = ["]
    for user, nkey in users.items():
        p = perms[user]
        lines.append(f"    # {user}")
        key = nkey if nkey.startswith("$") else json.dumps(nkey)
        lines.append(f"    {{nkey: {key}, permissions: {{")
        lines.append(f"      publish: {_allow(p.publish)}")
        lines.append(f"      subscribe: {_allow(p.subscribe)}")
        lines.append("    }}")
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def _allow(subjects: tuple[str, ...]) -> str:
    if not subjects:
        return '{deny: [">"]}'
    listed = json.dumps(list(subjects), indent=2).replace("\n", "\n      ")
    return "{allow: " + listed + "}"
