"""`sidecar facility check` judges the export and handoff destinations as the jobs do: a
destination the egress policy refuses is a FAIL naming the rule, and is not connected to."""

from __future__ import annotations

import socket

from sidecar_app import facility_check as fc
from sidecar_core.egress import EgressPolicy


def _lines(facility: fc.Facility, egress: EgressPolicy) -> list[str]:
    out: list[str] = []
    report = fc.Report(out.append)
    fc._handoff(facility, report, egress)
    fc._export(facility, report, egress)
    return out


def test_refused_destinations_fail_without_a_connection() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        facility = fc.Facility("north", "NORTH", False, None, pacs=("PACS", "127.0.0.1", port),
                               handoff_url=f"http://127.0.0.1:{port}/hook")
        lines = _lines(facility, EgressPolicy())
        assert lines[0].startswith("FAIL handoff: refused by the egress policy: ")
        assert "loopback" in lines[0]
        assert lines[1].startswith("FAIL export: refused by the egress policy: ")
        listener.settimeout(0.2)
        try:
            listener.accept()
            raise AssertionError("a refused destination was connected to")
        except TimeoutError:
            pass
        # listed: the handoff endpoint is reached (a TCP connection, nothing sent)
        ok: list[str] = []
        fc._handoff(facility, fc.Report(ok.append), EgressPolicy.parse("127.0.0.1"))
        assert ok == [f"PASS handoff: 127.0.0.1:{port} accepts connections"]
