"""The numbers behind the admin dashboard: every service's Prometheus metrics, scraped and
parsed (prometheus-client's parser), flattened to JSON samples of the sidecar's own metrics."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from review_gateway.admin.models import MetricSample, MetricsSummary, ServiceState

PREFIX = "sidecar_"


def samples(text: str, service: str) -> list[MetricSample]:
    out = []
    for family in text_string_to_metric_families(text):
        if not family.name.startswith(PREFIX):
            continue
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            out.append(MetricSample(service=service, name=s.name, labels=dict(s.labels),
                                    value=s.value))
    return out


async def collect(targets: dict[str, str], timeout_s: float = 3.0) -> MetricsSummary:
    """Scrapes `targets` (service name → host:port) and this gateway; a service that does not
    answer is reported as down with the cause, the others still count."""
    services = {"gateway": ServiceState(up=True, error="")}
    found = samples(generate_latest().decode(), "gateway")

    async def scrape(client: httpx.AsyncClient, name: str, address: str) -> None:
        try:
            reply = await client.get(f"http://{address}/metrics")
            reply.raise_for_status()
        except httpx.HTTPError as exc:
            services[name] = ServiceState(up=False, error=f"{address}: {type(exc).__name__}")
            return
        services[name] = ServiceState(up=True, error="")
        found.extend(samples(reply.text, name))

    async with httpx.AsyncClient(timeout=timeout_s) as client:
        await asyncio.gather(*(scrape(client, n, a) for n, a in sorted(targets.items())))
    return MetricsSummary(services=services, samples=found)
