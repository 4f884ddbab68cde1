"""Plumbing every sidecar service repeats: settings, database, bus, outbox, audit, object store, gRPC bootstrap."""
