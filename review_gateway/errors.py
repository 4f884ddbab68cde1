"""The gateway's one error type and its JSON body {"error": {"code", "reason", "message"}}."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


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


class ApiModel(BaseModel):
    """A JSON shape of the API: exactly its fields, no others (the OpenAPI schemas)."""

    model_config = ConfigDict(extra="forbid")


class ErrorDetail(ApiModel):
    code: str
    reason: str
    message: str


class ErrorBody(ApiModel):
    """Every error answer of the JSON API."""

    error: ErrorDetail


# The error answers of every JSON route, for the OpenAPI document (`responses=`): the gateway
# answers validation errors with this body too (400 for the query, 422 for the body).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorBody, "description": "The request was refused (see error.reason)"},
    "5XX": {"model": ErrorBody, "description": "A dependency failed or the gateway erred"},
}
