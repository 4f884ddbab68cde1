"""Protobuf contracts of the sidecar and their generated Python code (see generate.py)."""
