"""The Grafana dashboard in deploy/ names only metrics the services really export."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.registry import REGISTRY

from sidecar_core.observability import metrics  # noqa: F401  (registers the sidecar's metrics)

DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "sidecar-dashboard.json"


def test_every_panel_queries_an_exported_metric() -> None:
    board = json.loads(DASHBOARD.read_text())
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "gauge": ("",)}
    exported = {f.name + suffix for f in REGISTRY.collect()
                for suffix in suffixes.get(f.type, ("",))}
    exported |= {"sidecar_queue_depth", "sidecar_queue_ack_pending", "sidecar_queue_redelivered",
                 "sidecar_gateway_requests_total"}
    assert board["panels"]
    for panel in board["panels"]:
        for target in panel["targets"]:
            names = set(re.findall(r"sidecar_[a-z_]+", target["expr"]))
            assert names, panel["title"]
            for name in names:
                assert name in exported, (panel["title"], name)
