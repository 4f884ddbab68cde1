"""Domain errors with a stable UPPER_SNAKE reason; the gRPC and HTTP edges map them to codes."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base error: `code` is a gRPC status name, `reason` an UPPER_SNAKE ErrorInfo reason."""

    code = "INTERNAL"
    http_status = 500

    def __init__(self, reason: str, message: str, **metadata: Any) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata = {k: str(v) for k, v in metadata.items()}


class InvalidArgument(DomainError):
    code = "INVALID_ARGUMENT"
    http_status = 400


class NotFound(DomainError):
    code = "NOT_FOUND"
    http_status = 404


class AlreadyExists(DomainError):
    code = "ALREADY_EXISTS"
    http_status = 409


class FailedPrecondition(DomainError):
    code = "FAILED_PRECONDITION"
    http_status = 409


class PermissionDenied(DomainError):
    code = "PERMISSION_DENIED"
    http_status = 403


class Unauthenticated(DomainError):
    code = "UNAUTHENTICATED"
    http_status = 401


class Unavailable(DomainError):
    code = "UNAVAILABLE"
    http_status = 503


class ResourceExhausted(DomainError):
    code = "RESOURCE_EXHAUSTED"
    http_status = 429


class TransientError(Exception):
    """A job failure worth retrying (service unavailable, timeout)."""


class PermanentError(Exception):
    """A job failure retrying cannot fix (corrupt input, invalid output)."""
