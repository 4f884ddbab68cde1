"""Readiness of the gateway's dependencies: pluggable async checks run side by side."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DependencyStatus:
    """The answer of one check: `detail` says what is wrong when not ready."""

    name: str
    ready: bool
    detail: str = ""


HealthCheck = Callable[[], Awaitable[DependencyStatus]]


async def run_checks(checks: Sequence[HealthCheck],
                     timeout_s: float) -> list[DependencyStatus]:
    """Runs every check concurrently; one that raises or overruns counts as not ready."""

    async def guarded(check: HealthCheck) -> DependencyStatus:
        name = getattr(check, "__name__", type(check).__name__)
        try:
            return await asyncio.wait_for(check(), timeout_s)
        except TimeoutError:
            return DependencyStatus(name, False, f"no answer within {timeout_s:g}s")
        except Exception as exc:
            log.warning("health check %s failed", name, exc_info=True)
            return DependencyStatus(name, False, f"check failed: {type(exc).__name__}")

    return list(await asyncio.gather(*(guarded(c) for c in checks)))
