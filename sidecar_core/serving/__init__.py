"""Serving requests: the gRPC server bootstrap, uvicorn the mesh's way, request_id idempotency."""
