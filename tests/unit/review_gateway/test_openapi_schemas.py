"""Every JSON answer of the gateway has a schema in /openapi.json (the front end's types are
generated from it): no untyped `{}` or bare `dict[str, Any]`; other answers name their media
types."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from review_gateway.app import create_app
from review_gateway.errors import ErrorBody
from review_gateway.settings import GatewaySettings

# The only routes left out of the document: none answers the JSON API.
HIDDEN = {("GET", "/metrics"), ("GET", "/"), ("GET", "/admin/"), ("GET", "/admin/analytics"),
          *((m, "/api/v1/{path:path}") for m in ("GET", "POST", "PUT", "PATCH", "DELETE")),
          *((m, p) for m in ("GET", "HEAD")  # FastAPI's own: the document and its viewers
            for p in ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"))}
NO_BODY = {"204", "304"}


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


def _untyped(schema: dict[str, Any], components: dict[str, Any], seen: frozenset[str] = frozenset()
             ) -> str | None:
    """Why `schema` says nothing about the JSON it describes, or None when it is typed."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name not in components:
            return f"dangling $ref {schema['$ref']}"
        return None if name in seen else _untyped(components[name], components, seen | {name})
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            for part in schema[key]:
                if (why := _untyped(part, components, seen)) is not None:
                    return why
            return None
    kind = schema.get("type")
    if kind is None:
        return "no type and no $ref"
    if kind == "array":
        return _untyped(schema.get("items", {}), components, seen)
    if kind == "object":
        extra = schema.get("additionalProperties")
        if schema.get("properties"):
            return None
        if isinstance(extra, dict) and extra:
            return _untyped(extra, components, seen)
        return "an object with no properties (dict[str, Any])"
    return None


def problems(doc: dict[str, Any]) -> list[str]:
    """Every response of `doc` that is JSON without a schema, or a body without a media type."""
    components = doc.get("components", {}).get("schemas", {})
    out = []
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            responses = operation.get("responses", {})
            # A browser redirect (the SSO start and callback) succeeds with a 3xx and no body.
            if not any(str(code)[:1] in ("2", "3") for code in responses):
                out.append(f"{method.upper()} {path}: no success response")
            for code, response in responses.items():
                content = response.get("content", {})
                if str(code).startswith("2") and code not in NO_BODY and not content:
                    out.append(f"{method.upper()} {path} {code}: no media type")
                for media_type, entry in content.items():
                    schema = entry.get("schema", {})
                    if schema.get("$ref", "").endswith("/HTTPValidationError"):
                        out.append(f"{method.upper()} {path} {code}: FastAPI's validation "
                                   "error, which the gateway never answers")
                    if _is_json(media_type) and (why := _untyped(schema, components)):
                        out.append(f"{method.upper()} {path} {code} {media_type}: {why}")
    return out


def _routes(app: FastAPI) -> list[Any]:
    """Every route, those of included routers too (newer FastAPI keeps those routers whole)."""
    try:
        from fastapi.routing import iter_route_contexts  # type: ignore[attr-defined]
    except ImportError:
        return list(app.routes)
    return list(iter_route_contexts(app.routes))


def _gateway(tmp_path: Path) -> FastAPI:
    return create_app(GatewaySettings(data_dir=tmp_path, token_secret="x" * 32))


def test_every_json_response_of_the_gateway_has_a_schema(tmp_path: Path) -> None:
    doc = TestClient(_gateway(tmp_path)).get("/openapi.json").json()
    assert problems(doc) == []
    operations = sum(len(ops) for ops in doc["paths"].values())
    assert operations >= 50, operations
    schemas = doc["components"]["schemas"]
    for name in ("Study", "StudyDetail", "Finding", "Draft", "LoginResult", "StudyEvent",
                 "ErrorBody", "Health", "DicomAttribute", "ReviewAnalytics", "DeadLetterPage"):
        assert name in schemas, name


def test_only_non_api_routes_are_left_out_of_the_document(tmp_path: Path) -> None:
    hidden = {(method, route.path) for route in _routes(_gateway(tmp_path))
              if not getattr(route, "include_in_schema", True)
              for method in getattr(route, "methods", None) or ()}
    assert hidden == HIDDEN


def test_the_check_finds_untyped_answers() -> None:
    app = FastAPI()

    @app.get("/loose")
    async def loose() -> dict[str, Any]:
        return {}

    @app.get("/bare")
    async def bare() -> Any:
        return {}

    @app.get("/typed", responses={"4XX": {"model": ErrorBody}})
    async def typed() -> ErrorBody:
        raise NotImplementedError

    found = problems(app.openapi())
    assert any(p.startswith("GET /loose 200 application/json") for p in found), found
    assert any(p.startswith("GET /bare 200 application/json") for p in found), found
    assert not any(p.startswith("GET /typed") for p in found), found
