"""Circuit breakers: stop calling a dependency that keeps failing; let one trial through later.

One implementation for every user: the normalizer keeps one per model (only transient errors
count), the workflow one per LLM endpoint (every error counts)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from sidecar_core.errors import TransientError

T = TypeVar("T")


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpen(TransientError):
    """Raised instead of calling a dependency whose circuit is open (a transient condition)."""


@dataclass
class CircuitBreaker:
    """closed → open after `failure_threshold` consecutive failures; open → half-open once
    `cooldown_s` has passed, letting one trial call through; its success closes the circuit, its
    failure opens it again for another cooldown.

    Only the errors in `counts` are failures (by default TransientError: any other outcome, a
    result or a permanent error, proves the dependency answered). `name` is what the CircuitOpen
    message calls the dependency.
    """

    name: str
    failure_threshold: int = 5
    cooldown_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    counts: tuple[type[Exception], ...] = (TransientError,)
    state: CircuitState = CircuitState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    _trial_in_flight: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.cooldown_s < 0:
            raise ValueError("failure_threshold must be ≥ 1 and cooldown_s ≥ 0")

    def current_state(self) -> CircuitState:
        """The state now (an open circuit whose cooldown has passed reports half-open)."""
        if self.state is CircuitState.OPEN and self.clock() - self.opened_at >= self.cooldown_s:
            return CircuitState.HALF_OPEN
        return self.state

    def before_call(self) -> None:
        """Raises CircuitOpen unless a call may go through now."""
        state = self.current_state()
        if state is CircuitState.CLOSED:
            return
        if state is CircuitState.HALF_OPEN and not self._trial_in_flight:
            self.state = CircuitState.HALF_OPEN
            self._trial_in_flight = True
            return
        retry_in = max(0.0, self.cooldown_s - (self.clock() - self.opened_at))
        raise CircuitOpen(f"circuit open for {self.name}: {self.failures} consecutive failures; "
                          f"next trial in {retry_in:.1f} s")

    def record_success(self) -> None:
        self.state = CircuitState.CLOSED
        self.failures = 0
        self._trial_in_flight = False

    def record_failure(self) -> None:
        self.failures += 1
        trial = self._trial_in_flight
        self._trial_in_flight = False
        if trial or self.failures >= self.failure_threshold:
            self.state = CircuitState.OPEN
            self.opened_at = self.clock()

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Runs `fn` through the breaker."""
        self.before_call()
        try:
            result = await fn()
        except Exception as exc:
            if isinstance(exc, self.counts):
                self.record_failure()
            else:
                self.record_success()  # the dependency answered, if only with an error
            raise
        except BaseException:
            self._trial_in_flight = False  # cancelled: no verdict, the next call may try
            raise
        self.record_success()
        return result


@dataclass
class CircuitBreakers:
    """One breaker per key (a model name, an endpoint), all with the same policy."""

    failure_threshold: int = 5
    cooldown_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    counts: tuple[type[Exception], ...] = (TransientError,)
    _breakers: dict[str, CircuitBreaker] = field(default_factory=dict, repr=False)

    def get(self, key: str, name: str | None = None) -> CircuitBreaker:
        """The breaker of `key`, made on first use (`name`, default the key, names it in
        messages)."""
        if key not in self._breakers:
            self._breakers[key] = CircuitBreaker(name or key, self.failure_threshold,
                                                 self.cooldown_s, self.clock, self.counts)
        return self._breakers[key]

    def states(self) -> dict[str, CircuitState]:
        return {name: b.current_state() for name, b in self._breakers.items()}
