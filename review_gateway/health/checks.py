"""Readiness of the gateway's dependencies: pluggable async checks run side by side."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from review_gateway.errors import ApiModel, ErrorDetail

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


class DependencyHealth(ApiModel):
    status: Literal["ok", "unavailable"]
    detail: str | None = None


class Health(ApiModel):
    """GET /healthz: ready (200) or not (503, with `error` naming what is not)."""

    status: Literal["ok", "unavailable"]
    dependencies: dict[str, DependencyHealth]
    error: ErrorDetail | None = None


def health(results: Sequence[DependencyStatus]) -> Health:
    deps = {r.name: DependencyHealth(status="ok") if r.ready else
            DependencyHealth(status="unavailable", detail=r.detail) for r in results}
    failed = [r.name for r in results if not r.ready]
    if not failed:
        return Health(status="ok", dependencies=deps)
    return Health(status="unavailable", dependencies=deps, error=ErrorDetail(
        code="UNAVAILABLE", reason="DEPENDENCY_UNAVAILABLE",
        message=f"not ready: {', '.join(failed)}"))
