"""The peer rules of a facility's DICOM senders and the coalescing of their refusals' audit."""

from __future__ import annotations

import uuid

import pytest

from ingest_svc.dimse import peers
from ingest_svc.dimse.peers import Coalescer, check_peer
from ingest_svc.facilities import FacilityRef
from sidecar_core.security.dicom_tls import parse_allowed_hosts


def facility(require: bool = False, hosts: str = "") -> FacilityRef:
    return FacilityRef(uuid.uuid4(), "north", "NORTH", require, parse_allowed_hosts(hosts))


def test_any_peer_without_rules() -> None:
    assert check_peer(facility(), "192.0.2.7", False, None) is None


def test_allowed_hosts_apply_with_and_without_tls() -> None:
    fenced = facility(hosts="127.0.0.1/32")
    assert check_peer(fenced, "127.0.0.1", False, None) is None
    for tls in (False, True):
        refusal = check_peer(fenced, "127.0.0.2", tls, "CN=x")
        assert refusal is not None and refusal.reason == peers.ADDRESS_NOT_ALLOWED
        assert (refusal.result, refusal.source, refusal.diagnostic) == (1, 1, 3)


def test_client_certificate_required() -> None:
    strict = facility(require=True)
    assert check_peer(strict, "127.0.0.1", True, "CN=modality") is None
    for tls, subject in ((False, None), (True, None)):
        refusal = check_peer(strict, "127.0.0.1", tls, subject)
        assert refusal is not None and refusal.reason == peers.CLIENT_CERT_REQUIRED
        assert (refusal.result, refusal.source, refusal.diagnostic) == (1, 1, 1)


def test_coalescer_one_event_per_key_and_window(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(peers.time, "monotonic", lambda: now[0])
    c = Coalescer(window_s=60, per_host=3)
    assert c.admit("r", "10.0.0.1", "A") == 0
    assert [c.admit("r", "10.0.0.1", "A") for _ in range(5)] == [None] * 5
    assert c.admit("r", "10.0.0.2", "A") == 0  # another address
    assert c.admit("other", "10.0.0.1", "A") == 0  # another reason
    # a flood varying the AE title gets `per_host` events per window
    assert [c.admit("r", "10.0.0.1", f"AE{i}") for i in range(4)] == [5, 0, None, None]
    now[0] += 61
    assert c.admit("r", "10.0.0.1", "A") == 2  # the next window says how many were left out
