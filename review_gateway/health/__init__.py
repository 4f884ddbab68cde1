"""Readiness: the /healthz checks of the gateway's dependencies."""
