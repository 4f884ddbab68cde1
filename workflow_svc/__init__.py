"""Workflow service: the store, the study state machine, eligibility, audit and jobs."""
