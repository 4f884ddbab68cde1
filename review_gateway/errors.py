"""The gateway's one error type and its JSON body {"error": {"code", "reason", "message"}}."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An HTTP error with a gRPC-style code name and an UPPER_SNAKE reason."""

    def __init__(self, status: int, code: str, reason: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.reason = reason
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.reason, self.message)


def error_body(code: str, reason: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "reason": reason, "message": message}}
