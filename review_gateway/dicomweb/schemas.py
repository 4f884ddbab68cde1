"""What the DICOMweb routes answer, for the OpenAPI document: DICOM JSON (PS3.18 F.2) and the
media types of the multipart, DICOM and image answers."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from review_gateway.errors import ERROR_RESPONSES

DICOM_JSON = "application/dicom+json"
_BINARY = {"schema": {"type": "string", "format": "binary"}}


class DicomJSONResponse(JSONResponse):
    """Declares `application/dicom+json`: the routes build their bodies themselves."""

    media_type = DICOM_JSON


class DicomAttribute(BaseModel):
    """One attribute of a DICOM JSON dataset, keyed by its tag (8 hex digits)."""

    model_config = ConfigDict(extra="forbid")

    vr: str
    Value: list[Any] | None = Field(default=None, description="values (PN: component groups)")
    BulkDataURI: str | None = None
    InlineBinary: str | None = None


DicomDataset = dict[str, DicomAttribute]
DicomDatasets = list[DicomDataset]

NOT_MODIFIED: dict[int | str, dict[str, Any]] = {304: {"description": "Not modified (ETag)"}}


def binary(description: str, *media_types: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route answering bytes of `media_types`, with the JSON errors."""
    return {**ERROR_RESPONSES,
            200: {"description": description, "content": {m: _BINARY for m in media_types}}}


def dicom_json(description: str, model: Any,
               responses: dict[int | str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The route arguments of an answer in DICOM JSON shaped as `model`."""
    return {"response_class": DicomJSONResponse, "response_model": model,
            "response_description": description,
            "responses": {**ERROR_RESPONSES, **(responses or {})}}
