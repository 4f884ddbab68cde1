"""Operator and auditor routes: dead letters, facilities, metrics, review analytics."""
