"""WebSocket streams: one long-lived connection per session, one or more steps per message.

Same semantics and errors as POST /v1/sessions/{id}/steps: each text message is a StepRequest
({"inputs": [[...]], "position"?: n}); each reply is the StepResponse, or an error body with
its HTTP-equivalent `status`. An error leaves the session and the connection as they were.

A client may send its next messages without waiting for replies (readings as they arrive).
Messages already waiting when the server turns to the connection are answered together by
SessionManager.step_stream: one model call over their concatenated steps when they are all
valid and in sequence, one by one otherwise, with replies identical either way and in order.
Reading stops while `ws_max_queue` messages wait, so a fast sender is slowed by TCP, not buffered
(each message is at most `ws_max_message_bytes`, enforced by the server before it is read).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.types import Message

from service.api.deps import owner, services
from service.api.middleware import request_id_of
from service.api.sessions import parse_step_request
from service.errors import InvalidInput, ServiceError, internal_error_body
from service.logs import set_request_id

log = logging.getLogger("seqserve.errors")
router = APIRouter(tags=["sessions"])
SUBPROTOCOL = "seqserve.v1"


def _error(exc: ServiceError) -> bytes:
    return orjson.dumps({"status": exc.status, **exc.body()})


def _request(message: Mapping[str, Any], max_bytes: int) -> tuple[Any, Any]:
    raw = message.get("text")
    if raw is None:
        raw = message.get("bytes") or b""
    if len(raw) > max_bytes:
        raise InvalidInput(f"message of {len(raw)} bytes exceeds {max_bytes}", limit="max_body_bytes")
    return parse_step_request(raw, "message")


@router.websocket("/v1/sessions/{session_id}/stream")
async def stream(websocket: WebSocket, session_id: str) -> None:
    svc = services(websocket)
    # Browsers cannot set headers on a WebSocket handshake, so the dashboard offers the
    # subprotocols "seqserve.v1" and "seqserve.key.<key>"; a browser drops a connection whose
    # answer names none of those it offered, so the first one is chosen when offered.
    offered = websocket.scope.get("subprotocols", [])
    who = owner(websocket)
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    try:
        await svc.manager.get(session_id, who)
    except ServiceError as exc:
        await websocket.send_text(_error(exc).decode())
        await websocket.close(code=4000 + exc.status)
        return
    max_bytes = svc.settings.max_body_bytes
    waiting: asyncio.Queue[Message] = asyncio.Queue(svc.settings.ws_max_queue)

    async def read() -> None:
        try:
            while True:
                message = await websocket.receive()
                await waiting.put(message)
                if message["type"] == "websocket.disconnect":
                    return
        except (WebSocketDisconnect, RuntimeError):
            await waiting.put({"type": "websocket.disconnect"})

    reader = asyncio.create_task(read())
    try:
        while True:
            messages = [await waiting.get()]
            while not waiting.empty():
                messages.append(waiting.get_nowait())
            closing = any(m["type"] == "websocket.disconnect" for m in messages)
            messages = [m for m in messages if m["type"] == "websocket.receive"]
            # Parse every message; invalid ones get their error in place, in order.
            replies: list[bytes | None] = [None] * len(messages)
            requests: list[tuple[Any, Any]] = []
            slots: list[int] = []
            for i, message in enumerate(messages):
                try:
                    requests.append(_request(message, max_bytes))
                    slots.append(i)
                except ServiceError as exc:
                    replies[i] = _error(exc)
            if requests:
                # Runs of valid messages between invalid ones keep their order.
                results = await _answer_in_order(svc, session_id, who, requests, slots, replies)
                for i, result in results:
                    replies[i] = result
            for reply in replies:
                await websocket.send_text(reply.decode())  # type: ignore[union-attr]
            if closing:
                return
    except WebSocketDisconnect:
        return
    except Exception:  # a bug: logged, answered with the JSON 500 body, connection closed
        rid = request_id_of(websocket.scope).decode("latin-1")
        set_request_id(rid)
        log.exception("unhandled error")
        with contextlib.suppress(Exception):
            await websocket.send_text(orjson.dumps({"status": 500, **internal_error_body(rid)}).decode())
            await websocket.close(code=1011)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader


async def _answer_in_order(
    svc: Any,
    session_id: str,
    owner: str,
    requests: list[tuple[Any, Any]],
    slots: list[int],
    replies: list[bytes | None],
) -> list[tuple[int, bytes]]:
    """Apply the valid messages in arrival order: consecutive ones (no invalid message
    between them) go to step_stream together."""
    out: list[tuple[int, bytes]] = []
    run: list[int] = []

    async def flush() -> None:
        if not run:
            return
        results = await svc.manager.step_stream(session_id, [requests[k] for k in run], owner)
        for k, result in zip(run, results, strict=True):
            out.append((slots[k], _error(result) if isinstance(result, ServiceError) else result))
        run.clear()

    for k in range(len(requests)):
        if run and slots[k] != slots[run[-1]] + 1:  # an invalid message sits between
            await flush()
        run.append(k)
    await flush()
    return out
