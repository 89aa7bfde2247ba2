"""WebSocket streams: one long-lived connection per session, one or more steps per message.

Same semantics and errors as POST /v1/sessions/{id}/steps: each text message is a StepRequest
({"inputs": [[...]], "position"?: n}); each reply is the StepResponse, or an error body with
its HTTP-equivalent `status`. An error leaves the session and the connection as they were.

A client may send its next messages without waiting for replies (readings as they arrive).
Messages already waiting when the server turns to the connection are applied together, as one
batch of the step engine (service/core/engine.py): their steps run as one model call and one
store write, and each message gets the reply it would have got alone, in order (an invalid
message, a retry or a conflict is answered in its place without breaking the others' run).
Reading stops while `ws_max_queue` messages wait, so a fast sender is slowed by TCP, not buffered
(each message is at most `ws_max_message_bytes`, enforced by the server before it is read).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.types import Message

from service.api import codecs
from service.api.deps import owner, services
from service.api.middleware import request_id_of
from service.api.sessions import parse_step_request
from service.core.engine import StepRequest
from service.core.errors import InvalidInput, ServiceError, refused
from service.core.logs import set_request_id

log = logging.getLogger("seqserve.errors")
router = APIRouter(tags=["sessions"])
SUBPROTOCOL = "seqserve.v1"


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
        await svc.sessions.get(session_id, who)
    except ServiceError as exc:
        await websocket.send_text(codecs.stream_error(exc).decode())
        await websocket.close(code=4000 + exc.status)
        return
    max_bytes = svc.settings.max_body_bytes
    waiting: asyncio.Queue[Message] = asyncio.Queue(svc.settings.ws_max_queue)

    idle = svc.settings.ws_idle_timeout_seconds
    loop = asyncio.get_running_loop()
    heard = [loop.time()]  # when the client last sent, or its last batch was answered

    async def read() -> None:
        try:
            while True:
                message = await websocket.receive()
                heard[0] = loop.time()
                await waiting.put(message)
                if message["type"] == "websocket.disconnect":
                    return
        except (WebSocketDisconnect, RuntimeError):
            await waiting.put({"type": "websocket.disconnect"})

    async def watch() -> None:
        """Close the connection when the client sent nothing for `idle` seconds while nothing
        of its was pending (a timer, not a timeout per receive: messages that arrive together
        must still reach the engine together)."""
        while True:
            left = heard[0] + idle - loop.time()
            if left > 0 or not waiting.empty():
                await asyncio.sleep(max(left, idle / 4))
                continue
            refused("ws_idle_timeout_seconds")
            with contextlib.suppress(Exception):
                await websocket.close(code=1001, reason=f"idle for {idle:g} s (ws_idle_timeout_seconds)")
            return

    reader = asyncio.create_task(read())
    watcher = asyncio.create_task(watch())
    try:
        while True:
            messages = [await waiting.get()]
            while not waiting.empty():
                messages.append(waiting.get_nowait())
            closing = any(m["type"] == "websocket.disconnect" for m in messages)
            messages = [m for m in messages if m["type"] == "websocket.receive"]
            # Parse every message; invalid ones get their error in place, in order.
            replies: list[bytes | None] = [None] * len(messages)
            requests: list[StepRequest] = []
            slots: list[int] = []
            for i, message in enumerate(messages):
                try:
                    inputs, position = _request(message, max_bytes)
                except ServiceError as exc:
                    replies[i] = codecs.stream_error(exc)
                    continue
                requests.append(StepRequest(session_id, inputs, position))
                slots.append(i)
            if requests:
                if len(requests) > 1:
                    codecs.convert_together(requests, svc.settings.max_steps_per_request)
                outcomes = await svc.engine.apply(requests, owner=who)
                for i, outcome in zip(slots, outcomes, strict=True):
                    replies[i] = codecs.stream_reply(outcome)
            for reply in replies:
                await websocket.send_text(reply.decode())  # type: ignore[union-attr]
            heard[0] = loop.time()  # idle time counts from the answer, not from the request
            if closing:
                return
    except WebSocketDisconnect:
        return
    except Exception:  # a bug: logged, answered with the JSON 500 body, connection closed
        rid = request_id_of(websocket.scope).decode("latin-1")
        set_request_id(rid)
        log.exception("unhandled error")
        with contextlib.suppress(Exception):
            await websocket.send_text(codecs.stream_internal_error(rid).decode())
            await websocket.close(code=1011)
    finally:
        watcher.cancel()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
