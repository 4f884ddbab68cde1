"""The LLM endpoints' circuit-breaker policy (the breaker is the kernel's, sidecar_core.circuit)."""

from __future__ import annotations

from sidecar_core.circuit import CircuitBreakers

# What the CircuitOpen message calls an endpoint (its URL stays out of the study's error text).
ENDPOINT = "the LLM endpoint"


def llm_breakers() -> CircuitBreakers:
    """One breaker per endpoint: after 3 failures of any kind (timeout, HTTP error, connection
    refused) no call is made for 30 s; then one trial call may try."""
    return CircuitBreakers(failure_threshold=3, cooldown_s=30.0, counts=(Exception,))
