"""Attacks on the running product: its gRPC mesh, its bus and its users' tokens."""
