"""WebSocket streams: one long-lived connection per session, one or more steps per message.

Same semantics and errors as POST /v1/sessions/{id}/steps: each text message is a StepRequest
({"inputs": [[...]], "position"?: n}); each reply is the StepResponse, or an error body with
its HTTP-equivalent `status`. An error leaves the session and the connection as they were.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from service.api.body import check_object
from service.api.deps import services
from service.errors import InvalidInput, MalformedJSON, ServiceError

router = APIRouter(tags=["sessions"])
STEP_FIELDS = frozenset({"inputs", "position"})


def _error(exc: ServiceError) -> bytes:
    return orjson.dumps({"status": exc.status, **exc.body()})


@router.websocket("/v1/sessions/{session_id}/stream")
async def stream(websocket: WebSocket, session_id: str) -> None:
    svc = services(websocket)
    await websocket.accept()
    try:
        await svc.manager.get(session_id)
    except ServiceError as exc:
        await websocket.send_text(_error(exc).decode())
        await websocket.close(code=4000 + exc.status)
        return
    max_bytes = svc.settings.max_body_bytes
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text")
            if raw is None:
                raw = message.get("bytes") or b""
            try:
                if len(raw) > max_bytes:
                    raise InvalidInput(f"message of {len(raw)} bytes exceeds {max_bytes}", limit="max_body_bytes")
                try:
                    body = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    raise MalformedJSON(f"message is not valid JSON: {exc}") from None
                body = check_object(body, STEP_FIELDS, "message")
                if "inputs" not in body:
                    raise InvalidInput("inputs is required: [time][features]", field="inputs")
                reply = await svc.manager.step(session_id, body["inputs"], body.get("position"))
            except ServiceError as exc:
                reply = _error(exc)
            await websocket.send_text(reply.decode())
    except WebSocketDisconnect:
        return
