"""Plumbing every service repeats: settings, database, bus, outbox, audit, objects, gRPC."""
