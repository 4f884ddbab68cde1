"""Per-model circuit breakers: stop calling a model that keeps failing transiently; retry later."""

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
    """Raised instead of calling a model whose circuit is open."""


@dataclass
class CircuitBreaker:
    """closed → open after `failure_threshold` consecutive transient failures; open → half-open
    once `cooldown_s` has passed, letting one trial call through; its success closes the circuit,
    its transient failure opens it again for another cooldown.

    Only TransientError counts as a failure: any other outcome (a result or a permanent error)
    proves the model answered.
    """

    name: str
    failure_threshold: int = 5
    cooldown_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
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
        raise CircuitOpen(f"circuit open for {self.name}: {self.failures} consecutive transient "
                          f"failures; next trial in {retry_in:.1f} s")

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
        except TransientError:
            self.record_failure()
            raise
        except Exception:
            self.record_success()  # the model answered, if only with an error
            raise
        except BaseException:
            self._trial_in_flight = False  # cancelled: no verdict, the next call may try
            raise
        self.record_success()
        return result


@dataclass
class CircuitBreakers:
    """One breaker per model name, all with the same policy."""

    failure_threshold: int = 5
    cooldown_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _breakers: dict[str, CircuitBreaker] = field(default_factory=dict, repr=False)

    def for_model(self, name: str) -> CircuitBreaker:
        if name not in self._breakers:
            self._breakers[name] = CircuitBreaker(name, self.failure_threshold, self.cooldown_s,
                                                  self.clock)
        return self._breakers[name]

    def states(self) -> dict[str, CircuitState]:
        return {name: b.current_state() for name, b in self._breakers.items()}
