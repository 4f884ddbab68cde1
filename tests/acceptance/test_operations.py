"""Operator tools through `sidecar up`: `sidecar jobs` and the admin dead-letter API.

The re-drive of a real failed job is in tests/integration/test_dead_letters.py (Triton
stopped past the retry budget, then re-driven once it is back)."""

from __future__ import annotations

from tests.acceptance.stack import Stack, run_cli


def test_jobs_failed_lists_and_redrive_needs_a_selection(stack: Stack) -> None:
    target = ["--target", stack.address("workflow")]
    listed = run_cli("jobs", "failed", *target)
    assert listed.returncode == 0, listed.stderr
    assert "0 failed jobs" in listed.stderr
    refused = run_cli("jobs", "redrive", "--operator", "ops1", *target)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: name dead letters by sequence, facility or kind"]
    nothing = run_cli("jobs", "discard", "999999", "--reason", "test", "--operator", "ops1",
                      *target)
    assert nothing.returncode == 1 and "discarded: none" in nothing.stdout


def test_jobs_on_an_unreachable_target_say_so_in_one_line(stack: Stack) -> None:
    done = run_cli("jobs", "failed", "--target", "127.0.0.1:1")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: cannot reach the workflow service at 127.0.0.1:1; is 'sidecar up' running?"]


def test_admin_dead_letter_api(stack: Stack) -> None:
    with stack.client() as http:
        listed = http.get("/api/v1/admin/dead-letters")
        assert listed.status_code == 200, listed.text
        assert listed.json() == {"dead_letters": [], "next_page_token": ""}
        empty = http.post("/api/v1/admin/dead-letters/redrive", json={})
        assert empty.status_code == 400
        assert empty.json()["error"]["reason"] == "FILTER_REQUIRED"
        no_reason = http.post("/api/v1/admin/dead-letters/discard", json={"kind": "ai_run"})
        assert no_reason.status_code == 400
        assert no_reason.json()["error"]["reason"] == "REASON_REQUIRED"
    done = stack.cli("user", "add", "ops_rad", "--role", "radiologist", "--facility",
                     "acc_north", "--password-stdin", stdin="radiologist pass phrase\n")
    assert done.returncode == 0, done.stderr
    token = stack.login("ops_rad", "radiologist pass phrase")
    with stack.client(token) as http:
        assert http.get("/api/v1/admin/dead-letters").status_code == 403
        assert http.post("/api/v1/admin/dead-letters/redrive",
                         json={"kind": "ai_run"}).status_code == 403
