"""The NATS bus: subjects, publish and consume, transactional outbox, idempotent consumers."""
