"""Review analytics for auditors and admins: JSON for the analytics page, CSV for export."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from typing import Any

import grpc
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from protos.sidecar.workflow.v1 import operations_service_pb2 as pb
from protos.sidecar.workflow.v1 import operations_service_pb2_grpc as pb_grpc
from review_gateway.admin import models
from review_gateway.clients.workflow import to_api_error
from review_gateway.errors import ERROR_RESPONSES, ApiError

READERS = ("admin", "auditor")
TABLES = {
    "rates": ("dimension", "value", "reviewed", "accepted", "edited", "rejected", "ignored"),
    "turnaround": ("stage", "studies", "p50_s", "p90_s", "mean_s"),
    "added": ("facility", "modality", "label", "count"),
    "shadow": ("facility", "studies", "studies_with_findings", "findings", "mean_confidence",
               "studies_reported"),
}


# A spreadsheet reads a cell starting with one of these as a formula (OWASP, CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


# Kept as they are: a plain signed number ("-2", "+0.5") and the lone "-" of an empty cell,
# which a spreadsheet reads as a number or as text, never as a formula.
_INERT = re.compile(r"-|[-+]?[0-9]+(\.[0-9]+)?")


def spreadsheet_safe(value: Any) -> Any:
    """A text cell a spreadsheet shows as text: one starting with a formula character gets a
    leading apostrophe (OWASP's advice); numbers and other text are kept as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) \
            and not _INERT.fullmatch(value):
        return "'" + value
    return value


def _rows(reply: pb.GetReviewAnalyticsResponse, table: str) -> list[dict[str, Any]]:
    return [{k: getattr(item, k) for k in TABLES[table]} for item in getattr(reply, table)]


def analytics_router(principal: Callable[..., Any],
                     channel: Callable[[], grpc.aio.Channel],
                     timeout_s: float = 60.0) -> APIRouter:
    router = APIRouter(prefix="/api/v1/analytics", tags=["analytics"],
                       responses=ERROR_RESPONSES)

    async def fetch(me: Any, facility: str, since: date | None,
                    until: date | None) -> pb.GetReviewAnalyticsResponse:
        if getattr(me, "role", "") not in READERS:
            raise ApiError(403, "PERMISSION_DENIED", "AUDITORS_ONLY",
                           "review analytics are for the auditor and admin roles")
        request = pb.GetReviewAnalyticsRequest(facility=facility)
        if since:
            request.since.FromDatetime(datetime.combine(since, time(), UTC))
        if until:  # inclusive day: studies received before the next midnight
            request.until.FromDatetime(datetime.combine(until, time(), UTC)
                                       .replace(hour=23, minute=59, second=59))
        try:
            return await pb_grpc.AnalyticsServiceStub(channel()).GetReviewAnalytics(
                request, timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            raise to_api_error(err) from None

    @router.get("")
    async def review_analytics(
        me: Any = Depends(principal), facility: str = Query(default="", max_length=64),
        since: date | None = Query(default=None, description="first study date, YYYY-MM-DD"),
        until: date | None = Query(default=None, description="last study date, YYYY-MM-DD"),
    ) -> models.ReviewAnalytics:
        """Acceptance, edit, rejection and ignore counts by model version, modality, facility
        and label; findings radiologists added; turnaround per stage; shadow-mode figures."""
        reply = await fetch(me, facility, since, until)
        return models.ReviewAnalytics.model_validate(
            {table: _rows(reply, table) for table in TABLES})

    @router.get("/{table}.csv", response_class=Response, responses={200: {
        "description": "The table as CSV (a header row, then one row per group)",
        "content": {"text/csv": {"schema": {"type": "string"}}}}})
    async def review_analytics_csv(
        table: str, me: Any = Depends(principal),
        facility: str = Query(default="", max_length=64),
        since: date | None = Query(default=None), until: date | None = Query(default=None),
    ) -> Response:
        """One table of the analytics as CSV: rates, turnaround, added or shadow."""
        if table not in TABLES:
            raise ApiError(404, "NOT_FOUND", "NO_SUCH_TABLE",
                           f"analytics tables: {', '.join(TABLES)}")
        reply = await fetch(me, facility, since, until)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=TABLES[table], lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: spreadsheet_safe(v) for k, v in row.items()}
                         for row in _rows(reply, table))
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="review-{table}.csv"'})

    return router
