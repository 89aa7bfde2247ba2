"""The OpenAPI document: FastAPI's, completed from the request models in service/api/schemas.py.

Request bodies are read by the routes themselves (fast, and one body limit for every path), so
FastAPI does not see their shapes; the shapes that validate them (schemas.REQUEST_SHAPES) are
put into the document here, with the examples they carry as the media type's `examples`, so
Swagger UI's "Try it out" sends a body the server accepts. Statuses every operation can answer
whatever its route does are added here once, instead of in every decorator:

- 500 `internal_error`: any unexpected failure (the body carries the request id);
- 413 `payload_too_large`: the body limit, enforced before routing for every request;
- 401 `unauthorized`: only when data-plane API keys are configured, on every non-public path;
- 422 as the project's error body (FastAPI's own `HTTPValidationError` shape is never sent:
  query and path validation errors are translated in service/api/errors.py).

Path parameters get examples naming the default `electricity` model, so every operation can be
tried from /docs against a server that serves it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from service.api import schemas

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
UNIVERSAL = {
    "413": "the request body is over SEQSERVE_MAX_BODY_BYTES (payload_too_large)",
    "500": "an unexpected failure; `request_id` names it in the server log (internal_error)",
}
UNAUTHORIZED = "no valid API key (unauthorized); the key goes in `Authorization: Bearer` or `X-API-Key`"

# Path parameter examples, by parameter name; a path prefix overrides where a name means
# something else there.
PARAMETER_EXAMPLES: dict[str, Any] = {
    "name": schemas.DEFAULT_MODEL,
    "version": "1",
    "session_id": schemas.EXAMPLE_SESSION_ID,
    "filename": "forecast.png",
}
PARAMETER_EXAMPLES_BY_PATH: dict[tuple[str, str], Any] = {
    ("/v1/ui/datasets/{name}", "name"): "electricity_halfhourly",
}


def install(app: FastAPI, public_paths: frozenset[str] = frozenset(), keys: bool = False) -> None:
    """Replace app.openapi with the completed document (built once, on first use)."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = original()
        complete(document, public_paths if keys else None)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def complete(document: dict[str, Any], guarded_except: frozenset[str] | None) -> None:
    """Add body schemas and examples, the universal statuses and parameter examples in place.
    `guarded_except`: with API keys, the public paths (every other one documents 401)."""
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for shape in schemas.REQUEST_SHAPES:
        body = schemas.request_schema(shape)
        components.update(body.pop("$defs", {}))
        components[shape.__name__] = body
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            _complete_operation(path, operation, components, guarded_except)


def _complete_operation(
    path: str, operation: dict[str, Any], components: dict[str, Any], guarded_except: frozenset[str] | None
) -> None:
    responses = operation.setdefault("responses", {})
    for status, text in UNIVERSAL.items():
        responses.setdefault(status, _error(text))
    if guarded_except is not None and path not in guarded_except:
        responses.setdefault("401", _error(UNAUTHORIZED))
    for status, response in responses.items():
        content = response.get("content", {}).get("application/json", {})
        if content.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
            content["schema"] = ERROR_REF
            response["description"] = "invalid request (invalid_input, limit_exceeded, invalid_request)"
        elif status.startswith(("4", "5")) and "content" not in response:
            response["content"] = {"application/json": {"schema": ERROR_REF}}
    for parameter in operation.get("parameters", []):
        if parameter.get("in") != "path":
            continue
        name = parameter["name"]
        example = PARAMETER_EXAMPLES_BY_PATH.get((path, name), PARAMETER_EXAMPLES.get(name))
        if example is not None:
            parameter["example"] = example
    media = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if media is not None:
        ref = media.get("schema", {}).get("$ref", "")
        examples = components.get(ref.rsplit("/", 1)[-1], {}).get("examples")
        if examples:
            media["examples"] = {
                f"example{i + 1}" if len(examples) > 1 else "example": {"value": value}
                for i, value in enumerate(examples)
            }


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def examples(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], Any]]:
    """(method, path, path parameter examples, body example or None) for every operation and
    every body example it documents: what a client trying the API from /docs would send."""
    found = []
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            params = {p["name"]: p["example"] for p in operation.get("parameters", []) if "example" in p}
            media = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            bodies = [e["value"] for e in media.get("examples", {}).values()] or [None]
            found += [(method.upper(), path, params, body) for body in bodies]
    return found
