"""Reading a JSON body fast (orjson), with errors that say what is wrong."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from service.core.errors import MalformedJSON, json_problem


async def read_json(request: Request) -> Any:
    return parse_json(await request.body())


async def read_uncached(request: Request) -> bytes:
    """The request's body, not kept by the request object (Request.body() caches it for the
    life of the request, which for a streamed reply is as long as the client takes to read)."""
    chunks = [chunk async for chunk in request.stream()]
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_json(raw: bytes | str, what: str = "request body") -> Any:
    if not raw:
        raise MalformedJSON(f"{what} is empty; expected a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"{what} is not valid JSON: {json_problem(exc, raw)}") from None


def json_response_bytes(data: Any) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)
