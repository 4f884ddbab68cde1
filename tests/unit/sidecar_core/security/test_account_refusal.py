"""The account-lifecycle rule that refuses a session token: disabled, or issued before the
user's sessions were revoked (whole seconds: the revocation's own second survives)."""

from __future__ import annotations

from datetime import UTC, datetime

from sidecar_core.security.user_auth import account_refusal

REVOKED = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
SECOND = int(REVOKED.timestamp())


def test_a_disabled_account_refuses_every_token() -> None:
    assert account_refusal(REVOKED, None, SECOND + 100) == "ACCOUNT_DISABLED"


def test_tokens_issued_before_the_revocation_are_refused() -> None:
    assert account_refusal(None, REVOKED, SECOND - 1) == "SESSIONS_REVOKED"
    assert account_refusal(None, REVOKED, SECOND) == ""  # a login right after a reset
    assert account_refusal(None, REVOKED, SECOND + 1) == ""
    assert account_refusal(None, None, 0) == ""
