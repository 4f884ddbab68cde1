"""The login bounds as units: the password hash gate (argon2id at most N at once) and the
login back-off (doubling after the free failures, up to its cap; no lock-out)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from workflow_svc.identity import passwords
from workflow_svc.identity.sessions import LoginLimits


async def test_password_hashes_run_at_most_n_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    running, peak = [0], [0]
    lock = threading.Lock()

    def slow_verify(password: str, stored: str) -> bool:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return False

    monkeypatch.setattr(passwords, "verify_password", slow_verify)
    passwords.set_concurrency(2)
    try:
        assert not any(await asyncio.gather(*(passwords.verify_password_async("p", "h")
                                              for _ in range(12))))
        assert peak[0] == 2
    finally:
        passwords.set_concurrency(2)


def test_login_back_off_doubles_after_the_free_failures_up_to_its_cap() -> None:
    limits = LoginLimits(per_user=5, backoff_s=1.0, backoff_max_s=60.0)
    assert [limits.delay(n, 5) for n in (0, 4, 5, 6, 7, 10, 11, 1000)] == [
        0, 0, 1, 2, 4, 32, 60, 60]
