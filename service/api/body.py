"""Reading a JSON body fast (orjson), with errors that say what is wrong."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from service.errors import InvalidInput, MalformedJSON


async def read_json(request: Request) -> Any:
    return parse_json(await request.body())


def parse_json(raw: bytes | str, what: str = "request body") -> Any:
    if not raw:
        raise MalformedJSON(f"{what} is empty; expected a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"{what} is not valid JSON: {exc}") from None


def check_object(body: Any, allowed: frozenset[str], what: str = "request body") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidInput(f"{what} must be a JSON object")
    unknown = set(body) - allowed
    if unknown:
        raise InvalidInput(f"{what} has unknown fields {sorted(unknown)}; allowed: {sorted(allowed)}")
    return body


def optional_int(body: dict[str, Any], key: str, minimum: int = 0) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidInput(f"{key} must be an integer >= {minimum}", field=key)
    return value


def json_response_bytes(data: Any) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)
