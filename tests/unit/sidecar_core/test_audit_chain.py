"""The audit chain's canonical form and hash, and the walk that finds the first broken event."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from sidecar_core.audit_chain import GENESIS, canonical, event_hash, field_text, walk

EVENT_ID = uuid.UUID("0b7a2c52-1f4e-4c55-9a43-3c2f0d6e8a11")
STUDY_ID = uuid.UUID("6d1f2b8e-3a4c-4d5e-8f90-1a2b3c4d5e6f")


def _event(**changes: Any) -> dict[str, Any]:
    event = {"chain": 3, "chain_pos": 1, "id": EVENT_ID, "seq": 42, "type": "review.accepted",
             # 09:30:05.000123 at UTC+01:00 is 08:30:05.000123 UTC
             "at": datetime(2026, 12, 7, 9, 30, 5, 123, tzinfo=timezone(timedelta(hours=1))),
             "facility": "north", "accession": "A1", "study_instance_uid": "1.2.3",
             "study_id": STUDY_ID, "actor": "dr.é", "job_id": "", "attempt": 0,
             "error_class": "", "error_message": "", "context": '{"b": 1.50, "aa": "x"}',
             "prev_hash": GENESIS}
    event.update(changes)
    return event


def test_the_canonical_form_is_length_prefixed_utf8_in_the_documented_order() -> None:
    expected = (b"sidecar.audit.v1|1:3|1:1|36:0b7a2c52-1f4e-4c55-9a43-3c2f0d6e8a11|2:42"
                b"|15:review.accepted|27:2026-12-07T08:30:05.000123Z|5:north|2:A1|5:1.2.3"
                b"|36:6d1f2b8e-3a4c-4d5e-8f90-1a2b3c4d5e6f|" + b"%d:" % len("dr.é".encode())
                + "dr.é".encode() + b"|0:|1:0|0:|0:|22:{\"b\": 1.50, \"aa\": \"x\"}"
                b"|64:" + GENESIS.encode())
    assert canonical(_event()) == expected
    assert event_hash(_event()) == hashlib.sha256(expected).hexdigest()


def test_no_two_field_splits_give_one_form() -> None:
    # 'ab' + '' and 'a' + 'b' would be one string without the length prefixes
    assert canonical(_event(facility="ab", accession="")) != \
        canonical(_event(facility="a", accession="b"))


def test_every_field_changes_the_hash() -> None:
    base = event_hash(_event())
    changed = {"chain": 4, "chain_pos": 2, "id": uuid.uuid4(), "seq": 43, "type": "x",
               "at": _event()["at"] + timedelta(microseconds=1), "facility": "south",
               "accession": "A2", "study_instance_uid": "1.2.4", "study_id": None,
               "actor": "dr.x", "job_id": "j", "attempt": 1, "error_class": "E",
               "error_message": "m", "context": "{}", "prev_hash": "f" * 64}
    for name, value in changed.items():
        assert event_hash(_event(**{name: value})) != base, name


def test_field_texts() -> None:
    assert field_text(None) == ""
    assert field_text(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == \
        "2026-01-02T03:04:05.000000Z"
    with pytest.raises(TypeError):
        field_text(True)


def _chain(n: int, chain: int = 0) -> list[dict[str, Any]]:
    events, prev = [], GENESIS
    for i in range(1, n + 1):
        event = _event(chain=chain, chain_pos=i, id=uuid.uuid4(), seq=i, prev_hash=prev)
        event["hash"] = prev = event_hash(event)
        events.append(event)
    return events


def _head(events: list[dict[str, Any]], chain: int = 0) -> dict[str, Any]:
    return {"chain": chain, "pos": len(events), "hash": events[-1]["hash"] if events else GENESIS}


def test_an_intact_chain_verifies() -> None:
    events = _chain(5)
    verdict = walk(events, [_head(events), _head([], 1)])
    assert verdict.ok and verdict.checked == 5
    assert "5 events checked in 2 chains" in verdict.line()


def test_a_changed_event_is_named() -> None:
    events = _chain(5)
    events[2]["actor"] = "someone.else"
    verdict = walk(events, [_head(events)])
    assert not verdict.ok and verdict.event is events[2]
    assert f"event {events[2]['id']} (seq 3, type review.accepted" in verdict.line()
    assert "changed after it was stored" in verdict.line()


def test_a_deleted_event_is_named_by_the_one_after_it() -> None:
    events = _chain(5)
    head = _head(events)
    del events[1]
    verdict = walk(events, [head])
    assert verdict.event is events[1] and "position 2" in verdict.problem


def test_reordered_events_are_found() -> None:
    events = _chain(4)
    head = _head(events)
    a, b = events[1], events[2]
    a["chain_pos"], b["chain_pos"] = b["chain_pos"], a["chain_pos"]
    verdict = walk([events[0], b, a, events[3]], [head])
    assert verdict.event is b and "prev_hash" in verdict.problem


def test_deleting_the_last_events_is_found_at_the_head() -> None:
    events = _chain(4)
    verdict = walk(events[:3], [_head(events)])
    assert not verdict.ok and verdict.event is None
    assert "recorded head is position 4" in verdict.problem


def test_an_event_outside_every_chain_is_found() -> None:
    events = _chain(2)
    stray = _event(chain=None, chain_pos=None, prev_hash=None, hash=None)
    verdict = walk([stray, *events], [_head(events)])
    assert verdict.event is stray and "in no chain" in verdict.problem
