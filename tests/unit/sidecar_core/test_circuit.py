"""The kernel's circuit breaker, closed → open → half-open → closed with a controllable clock, as
its two users set it up: per model in the normalizer (only transient errors count) and per LLM
endpoint in the workflow (every error counts)."""

from __future__ import annotations

import asyncio

import pytest

from sidecar_core.circuit import CircuitBreaker, CircuitBreakers, CircuitOpen, CircuitState
from sidecar_core.errors import PermanentError, TransientError
from workflow_svc.report_loop.llm.breaker import ENDPOINT, llm_breakers


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Model:
    """Counts calls; fails with the queued errors, then answers."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def _fail(breaker: CircuitBreaker, n: int) -> None:
    for _ in range(n):
        with pytest.raises(TransientError):
            await breaker.call(Model(TransientError("unavailable")))


async def test_opens_after_n_consecutive_transient_failures() -> None:
    clock = Clock()
    breaker = CircuitBreaker("chest_ct_nodules", failure_threshold=3, cooldown_s=10, clock=clock)
    await _fail(breaker, 2)
    assert breaker.current_state() is CircuitState.CLOSED
    await _fail(breaker, 1)
    assert breaker.current_state() is CircuitState.OPEN
    model = Model()
    with pytest.raises(CircuitOpen, match="circuit open for chest_ct_nodules") as err:
        await breaker.call(model)
    assert isinstance(err.value, TransientError)
    assert model.calls == 0, "an open circuit must not call the model"


async def test_success_resets_the_count() -> None:
    breaker = CircuitBreaker("m", failure_threshold=3, clock=Clock())
    await _fail(breaker, 2)
    assert await breaker.call(Model()) == "ok"
    await _fail(breaker, 2)
    assert breaker.current_state() is CircuitState.CLOSED


async def test_permanent_errors_do_not_open_it() -> None:
    breaker = CircuitBreaker("m", failure_threshold=2, clock=Clock())
    for _ in range(5):
        with pytest.raises(PermanentError):
            await breaker.call(Model(PermanentError("invalid argument")))
    assert breaker.current_state() is CircuitState.CLOSED


async def test_half_open_trial_success_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker("m", failure_threshold=1, cooldown_s=10, clock=clock)
    await _fail(breaker, 1)
    clock.now += 9.9
    with pytest.raises(CircuitOpen):
        await breaker.call(Model())
    clock.now += 0.1
    assert breaker.current_state() is CircuitState.HALF_OPEN
    model = Model()
    assert await breaker.call(model) == "ok" and model.calls == 1
    assert breaker.current_state() is CircuitState.CLOSED


async def test_half_open_trial_failure_reopens_for_another_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker("m", failure_threshold=2, cooldown_s=10, clock=clock)
    await _fail(breaker, 2)
    clock.now += 10
    await _fail(breaker, 1)  # the trial fails: open again at once, not after 2 more
    assert breaker.current_state() is CircuitState.OPEN
    clock.now += 5
    with pytest.raises(CircuitOpen, match="next trial in 5.0 s"):
        await breaker.call(Model())
    clock.now += 5
    assert await breaker.call(Model()) == "ok"


async def test_only_one_trial_at_a_time_in_half_open() -> None:
    clock = Clock()
    breaker = CircuitBreaker("m", failure_threshold=1, cooldown_s=1, clock=clock)
    await _fail(breaker, 1)
    clock.now += 1
    gate = asyncio.Event()

    async def slow() -> str:
        await gate.wait()
        return "ok"

    trial = asyncio.create_task(breaker.call(slow))
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpen):
        await breaker.call(Model())
    gate.set()
    assert await trial == "ok"
    assert breaker.current_state() is CircuitState.CLOSED


async def test_cancelled_trial_leaves_half_open() -> None:
    clock = Clock()
    breaker = CircuitBreaker("m", failure_threshold=1, cooldown_s=1, clock=clock)
    await _fail(breaker, 1)
    clock.now += 1
    trial = asyncio.create_task(breaker.call(lambda: asyncio.sleep(60)))
    await asyncio.sleep(0)
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    assert breaker.current_state() is CircuitState.HALF_OPEN
    assert await breaker.call(Model()) == "ok"


async def test_one_breaker_per_model() -> None:
    breakers = CircuitBreakers(failure_threshold=1, cooldown_s=60, clock=Clock())
    await _fail(breakers.get("a"), 1)
    assert breakers.get("a") is breakers.get("a")
    assert await breakers.get("b").call(Model()) == "ok"
    assert breakers.states() == {"a": CircuitState.OPEN, "b": CircuitState.CLOSED}


def test_rejects_nonsense_policy() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("m", failure_threshold=0)


# The LLM endpoints' policy (workflow_svc.report_loop.llm.breaker): 3 failures of any kind, 30 s.


def _llm(clock: Clock) -> CircuitBreaker:
    breakers = llm_breakers()
    breakers.clock = clock
    return breakers.get("http://127.0.0.1:9/v1", ENDPOINT)


async def test_an_llm_endpoint_opens_after_three_failures_of_any_kind() -> None:
    clock = Clock()
    breaker = _llm(clock)
    for error in (TimeoutError("read timeout"), ConnectionRefusedError("refused")):
        with pytest.raises(OSError):
            await breaker.call(Model(error))
    assert breaker.current_state() is CircuitState.CLOSED
    with pytest.raises(RuntimeError):
        await breaker.call(Model(RuntimeError("HTTP 500")))
    assert breaker.current_state() is CircuitState.OPEN
    endpoint = Model()
    with pytest.raises(CircuitOpen) as err:
        await breaker.call(endpoint)
    assert endpoint.calls == 0, "an open circuit must not call the endpoint"
    # what the draft's error says: the class name, the endpoint not by its URL
    assert f"{type(err.value).__name__}: {err.value}".startswith(
        "CircuitOpen: circuit open for the LLM endpoint: 3 consecutive failures")
    assert "127.0.0.1" not in str(err.value)


async def test_an_llm_endpoint_tries_again_after_30_s() -> None:
    clock = Clock()
    breaker = _llm(clock)
    for _ in range(3):
        with pytest.raises(RuntimeError):
            await breaker.call(Model(RuntimeError("HTTP 500")))
    clock.now += 29.9
    with pytest.raises(CircuitOpen, match="next trial in 0.1 s"):
        await breaker.call(Model())
    clock.now += 0.1
    with pytest.raises(RuntimeError):  # the trial fails: open again at once
        await breaker.call(Model(RuntimeError("HTTP 500")))
    assert breaker.current_state() is CircuitState.OPEN
    clock.now += 30
    assert await breaker.call(Model()) == "ok"
    assert breaker.current_state() is CircuitState.CLOSED and breaker.failures == 0


def test_one_breaker_per_llm_endpoint() -> None:
    breakers = llm_breakers()
    assert breakers.get("http://a/v1", ENDPOINT) is breakers.get("http://a/v1", ENDPOINT)
    assert breakers.get("http://a/v1", ENDPOINT) is not breakers.get("http://b/v1", ENDPOINT)
