"""The embedded runtime: real PostgreSQL, NATS and Triton plus every service on one machine."""
