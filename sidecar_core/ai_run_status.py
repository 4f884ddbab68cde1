"""An AI run's status, defined once: the stored `ai_runs.status`, `AiRunFinished.status`."""

from __future__ import annotations

from enum import StrEnum


class AiRunStatus(StrEnum):
    """An AI run's status; the values are the strings stored and carried on the bus."""

    QUEUED = "queued"  # planned by the workflow, its job on the bus
    RUNNING = "running"  # a normalizer worker took the job
    COMPLETED = "completed"  # validated findings (stored by the workflow when it records this)
    FAILED = "failed"  # the model could not be run or answered with errors
    INVALID = "invalid"  # the model's output broke the findings schema (`ai_result.invalid`)
    REDRIVEN = "redriven"  # failed, then replaced by a fresh run an operator re-drove


# A run in one of these is over: no worker runs it again, its result is recorded.
TERMINAL: frozenset[AiRunStatus] = frozenset(
    {AiRunStatus.COMPLETED, AiRunStatus.FAILED, AiRunStatus.INVALID, AiRunStatus.REDRIVEN})
# What a finished run reports (`AiRunFinished.status`); only an operator's re-drive sets REDRIVEN.
OUTCOMES: frozenset[AiRunStatus] = frozenset(
    {AiRunStatus.COMPLETED, AiRunStatus.FAILED, AiRunStatus.INVALID})


def is_terminal(status: str) -> bool:
    """Whether a stored status (a plain string from the database) is terminal."""
    return status in TERMINAL


def outcome(value: str) -> AiRunStatus:
    """The outcome an `AiRunFinished.status` names; ValueError for anything else."""
    if value not in OUTCOMES:
        raise ValueError(f"{value!r} is not an AI run outcome ({', '.join(sorted(OUTCOMES))})")
    return AiRunStatus(value)
