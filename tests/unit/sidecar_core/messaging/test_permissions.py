"""The bus's permission table: who may publish and subscribe what."""

from __future__ import annotations

import re

import pytest

from sidecar_core.messaging import permissions, subjects
from sidecar_core.messaging.permissions import may_publish, table
from sidecar_core.messaging.subjects import Topology

T = Topology()
JOB_AND_EVENT_SUBJECTS = (subjects.STUDY_RECEIVED, subjects.ASSET_PREPROCESSED,
                          subjects.AI_RUN_FINISHED, subjects.AI_RUN_FINDINGS_STORED,
                          subjects.REVIEW_CHANGED, subjects.JOB_PREPROCESS, subjects.JOB_AI_RUN,
                          subjects.JOB_HANDOFF, subjects.JOB_OVERLAY, subjects.JOB_EXPORT)


def test_only_the_normalizer_publishes_an_ai_result() -> None:
    result = T.subject(subjects.AI_RUN_FINISHED)
    assert [u for u in permissions.USERS if may_publish(T, u, result)] == ["normalizer",
                                                                           "operator"]


@pytest.mark.parametrize("name", JOB_AND_EVENT_SUBJECTS)
def test_every_subject_has_exactly_one_source_whose_relay_publishes_it(name: str) -> None:
    subject = T.subject(name)
    owners = [u for u, p in table(T).items()
              if any(permissions.matches(s, subject) for s in p.outbox)]
    assert len(owners) == 1, owners
    assert may_publish(T, owners[0], subject)


def test_every_relay_publishes_audit_events_and_the_gateway_only_listens() -> None:
    audit = T.audit_subject("study.received")
    for user in ("workflow", "ingest", "preprocess", "normalizer"):
        assert may_publish(T, user, audit)
    gateway = table(T)["gateway"]
    assert gateway.publish == ()
    assert any(permissions.matches(s, audit) for s in gateway.subscribe)


def test_every_durable_consumer_is_run_by_one_user_with_what_it_needs() -> None:
    specs = [getattr(T, name)() for name in dir(T)
             if not name.startswith("_") and callable(getattr(T, name))
             and name.endswith(("_jobs", "_events", "_runs", "_reviews", "_audit"))]
    assert len(specs) == 10  # priors-worker (docs/priors.md) is the tenth
    for spec in specs:
        users = [u for u in permissions.USERS if spec in permissions.consumers(T, u)]
        assert len(users) == 1, (spec.durable, users)
        user = users[0]
        for subject in (f"$JS.API.CONSUMER.DURABLE.CREATE.{spec.stream}.{spec.durable}",
                        f"$JS.API.CONSUMER.MSG.NEXT.{spec.stream}.{spec.durable}",
                        f"$JS.ACK.{spec.stream}.{spec.durable}.1.2.3.4.5",
                        f"$KV.{permissions.bucket(T)}.{spec.durable}.17"):
            assert may_publish(T, user, subject), (user, subject)
        other = next(u for u in ("ingest", "normalizer") if u != user)
        assert not may_publish(T, other, f"$JS.API.CONSUMER.MSG.NEXT.{spec.stream}."
                                         f"{spec.durable}")
        if spec.stream != T.dlq_stream:  # a failed job's dead letter
            consumed = spec.filter_subject or f"{T.prefix}.study.v1.received"
            assert may_publish(T, user, T.dlq_subject(consumed))


def test_no_service_manages_streams_beyond_declaring_them_nor_reads_others_replies() -> None:
    for user, p in table(T).items():
        if user == "operator":
            assert p.publish == (">",)
            continue
        assert not any(s.startswith(("$JS.API.STREAM.DELETE", "$JS.API.STREAM.PURGE")) or
                       s in (">", "$JS.API.>", "$JS.>") for s in p.publish), user
        assert not may_publish(T, user, f"$JS.API.STREAM.DELETE.{T.jobs_stream}")
        assert p.subscribe[0] == f"_INBOX.{user}.>"
        assert not any(permissions.matches(s, "_INBOX.abcdef") for s in p.subscribe)


def test_only_the_workflow_reads_and_removes_dead_letters() -> None:
    delete = f"$JS.API.STREAM.MSG.DELETE.{T.dlq_stream}"
    assert [u for u in permissions.USERS if may_publish(T, u, delete)] == ["workflow",
                                                                           "operator"]


@pytest.mark.parametrize(("pattern", "subject", "expected"), [
    ("a.b", "a.b", True), ("a.b", "a.b.c", False), ("a.*", "a.b", True),
    ("a.*", "a.b.c", False), ("a.>", "a.b.c", True), ("a.>", "a", False),
    ("*.audit.v1.>", "t1.audit.v1.study.x", True), ("a.b", "a.c", False)])
def test_subject_matching_and_its_sql_regex_agree(pattern: str, subject: str,
                                                  expected: bool) -> None:
    assert permissions.matches(pattern, subject) is expected
    assert bool(re.fullmatch(permissions.subject_regex([pattern]), subject)) is expected


def test_no_pattern_matches_nothing() -> None:
    assert re.search(permissions.subject_regex([]), "anything") is None


def test_a_wildcard_topology_gives_whole_token_wildcards() -> None:
    wild = table(Topology("*", "*"))
    for p in wild.values():
        for s in (*p.publish, *p.subscribe):
            assert all(t in ("*", ">") or "*" not in t for t in s.split(".")), s
    assert may_publish(Topology("*", "*"), "normalizer", "t9.ai_run.v1.finished")
    assert not may_publish(Topology("*", "*"), "ingest", "t9.ai_run.v1.finished")


def test_the_server_block_has_one_user_per_key_and_no_anonymous_user() -> None:
    text = permissions.authorization(T, {"ingest": "UINGEST", "gateway": "$SIDECAR_NKEY_G"})
    assert '{nkey: "UINGEST"' in text and "{nkey: $SIDECAR_NKEY_G," in text
    assert "no_auth_user" not in text and text.count("nkey:") == 2
    assert 'publish: {deny: [">"]}' in text  # the gateway


def test_the_arrival_notice_goes_from_ingest_to_preprocess_only_and_in_no_stream() -> None:
    notice = T.subject(subjects.INSTANCES_STORED)
    perms = table(T)
    assert [u for u in permissions.USERS if may_publish(T, u, notice)] == ["ingest", "operator"]
    subscribers = [u for u, p in perms.items()
                   if any(permissions.matches(s, notice) for s in p.subscribe)]
    assert subscribers == ["preprocess", "operator"]
    assert not any(permissions.matches(s, notice) for p in perms.values() for s in p.outbox), \
        "a core NATS notice, never an outbox row"
    assert not any(permissions.matches(s, notice) for spec in T.streams for s in spec.subjects), \
        "at most once: no stream keeps it"
