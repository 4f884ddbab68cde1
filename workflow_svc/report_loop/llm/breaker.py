"""A small circuit breaker per LLM endpoint: after repeated failures, fail fast for a while."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


class CircuitOpen(Exception):
    """The endpoint failed too often lately; no call is made until the cool-down ends."""


@dataclass
class Breaker:
    threshold: int = 3
    cooldown_s: float = 30.0
    failures: int = 0
    opened_at: float | None = None

    def check(self) -> None:
        if self.opened_at is None:
            return
        if time.monotonic() - self.opened_at < self.cooldown_s:
            raise CircuitOpen(f"LLM endpoint failing; retry after {self.cooldown_s:.0f} s")
        self.opened_at = None  # half-open: one call may try

    def success(self) -> None:
        self.failures, self.opened_at = 0, None

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = time.monotonic()


@dataclass
class Breakers:
    threshold: int = 3
    cooldown_s: float = 30.0
    by_endpoint: dict[str, Breaker] = field(default_factory=dict)

    def get(self, endpoint: str) -> Breaker:
        if endpoint not in self.by_endpoint:
            self.by_endpoint[endpoint] = Breaker(self.threshold, self.cooldown_s)
        return self.by_endpoint[endpoint]
