"""What every process reports: JSON logs, Prometheus metrics, OpenTelemetry traces."""
