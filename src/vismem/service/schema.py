"""The OpenAPI document, made to say exactly what the running server does.

FastAPI writes most of it from the endpoints' types. This pass fixes what it cannot
know: file parts are `image/*` (the server refuses anything else with 415); an
optional parameter is absent, never null; every operation can answer 422 (one refuses a
query parameter it does not take: `http.known_fields`; 408, a stalled client, the app
declares for every operation), and every one with a body 413, 415 (a body of another
type than the one it takes) and 503 (the server stopped while it arrived), each with the
one error body; a file list
holds at least one file; a form takes no field it does not name (`http.known_fields`);
and a query is an image `file` or a `vector`, exactly one.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .http import STATUS
from .models import non_null

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
IMAGE_PART = {"type": "string", "format": "binary", "contentMediaType": "image/*"}


def install_openapi(app: FastAPI) -> None:
    """Serve the corrected document at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, openapi_version=app.openapi_version,
                                   summary=app.summary, description=app.description, routes=app.routes)
            app.openapi_schema = corrected(document)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def corrected(document: dict[str, Any]) -> dict[str, Any]:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                parameter["schema"] = non_null(parameter["schema"])
            body = operation.get("requestBody")
            for media_type, content in (body or {}).get("content", {}).items():
                if media_type == "multipart/form-data" and _form(content, schemas):
                    body["required"] = True  # a body with one of its choices
            answers = operation.setdefault("responses", {})
            answers["422"] = _error(422)
            if body:
                answers["400"] = answers.get("400") or _error(400)
                answers["413"] = _error(413)
                answers["415"] = _error(415)
                answers["503"] = answers.get("503") or _error(503)
            operation["responses"] = dict(sorted(answers.items()))
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document


def _error(status: int) -> dict[str, Any]:
    return {"description": STATUS[status], "content": {"application/json": {"schema": ERROR_REF}}}


def _form(content: dict[str, Any], schemas: dict[str, Any]) -> bool:
    """A multipart body: file parts as image/*, at least one file in a list of files,
    optional fields that are absent rather than null, and no other fields. True when the body must hold one of
    two fields (an image `file` or a `vector`), which makes it required."""
    reference = content["schema"].get("$ref", "")
    schema = schemas[reference.rsplit("/", 1)[-1]] if reference else content["schema"]
    encoding = content.setdefault("encoding", {})
    for name, field in list(schema.get("properties", {}).items()):
        field = non_null(field)
        if _is_file(field):
            field = {key: value for key, value in field.items() if key not in ("contentMediaType", "format")}
            field.update(IMAGE_PART)
            encoding[name] = {"contentType": "image/*"}
        elif field.get("type") == "array" and _is_file(field.get("items", {})):
            field = {**field, "items": IMAGE_PART, "minItems": 1}
            encoding[name] = {"contentType": "image/*"}
        schema["properties"][name] = field
    schema["additionalProperties"] = False  # refused with 422: http.known_fields
    if {"file", "vector"} <= schema.get("properties", {}).keys():  # a query is an image or a vector, not both
        schema["oneOf"] = [{"required": ["file"]}, {"required": ["vector"]}]
        return True
    return False


def _is_file(field: dict[str, Any]) -> bool:
    return field.get("type") == "string" and (
        field.get("format") == "binary" or field.get("contentMediaType") == "application/octet-stream")
