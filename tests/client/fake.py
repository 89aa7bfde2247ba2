"""A scripted stand-in for the service's session protocol, behind httpx.MockTransport.

It keeps what the real service keeps: per session a position, a state (here a running sum,
so the outputs reveal every step ever applied, in order), and the last applied request for
replay (same position-before and same inputs: the recorded reply again, nothing applied).
`script` is a list of faults consumed one per step request, e.g. "lose" (applied, then the
reply is lost on the way back), "drop" (connection fails before the server sees it),
"race" (applied, but the reply is a 409 as when a retry raced the original on another
replica), 503 (refused, not applied).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class FakeSession:
    total: float = 0.0
    position: int = 0
    last: tuple[int, str, dict[str, Any]] | None = None
    expired: bool = False
    model_changed: bool = False  # its model version is now another graph (steps: 410 model_changed)


@dataclass
class FakeService:
    script: list[Any] = field(default_factory=list)
    sessions: dict[str, FakeSession] = field(default_factory=dict)
    applied: int = 0  # steps applied, over every session
    step_requests: int = 0

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.strip("/").split("/")
        body = json.loads(request.content) if request.content else {}
        if parts[:2] == ["v1", "models"] and len(parts) == 4 and parts[3] == "sessions" and request.method == "POST":
            return self.create(parts[2], body)
        if parts[:2] == ["v1", "sessions"] and len(parts) == 4 and parts[3] == "steps":
            return self.step(parts[2], body)
        if parts[:2] == ["v1", "sessions"] and len(parts) == 3:
            session = self.sessions.get(parts[2])
            if session is None:
                return _error(404, "session_not_found")
            if session.expired:
                return _error(410, "session_expired")
            if request.method == "DELETE":
                del self.sessions[parts[2]]
                return httpx.Response(204)
            return httpx.Response(200, json={**self.info(parts[2]), "state": {"h": [[session.total]]}})
        if parts[:2] == ["v1", "models"] and len(parts) == 5 and parts[3:] == ["sessions", "steps"]:
            return self.bulk(body)
        return _error(404, "not_found")

    def info(self, sid: str) -> dict[str, Any]:
        session = self.sessions[sid]
        return {"session_id": sid, "model": "sum", "version": 1, "position": session.position}

    def create(self, model: str, body: dict[str, Any]) -> httpx.Response:
        sid = secrets.token_hex(8)
        total = body["state"]["h"][0][0] if "state" in body else 0.0
        self.sessions[sid] = FakeSession(total=total)
        return httpx.Response(201, json=self.info(sid))

    def competing_step(self, sid: str, value: float) -> None:
        """Another writer appends a step."""
        session = self.sessions[sid]
        self.apply(sid, session, [[value]], session.position)

    def apply(self, sid: str, session: FakeSession, inputs: list[list[float]], position: int) -> dict[str, Any]:
        outputs = []
        for row in inputs:
            session.total += row[0]
            outputs.append([session.total])
        session.position += len(inputs)
        self.applied += len(inputs)
        reply = {**self.info(sid), "outputs": outputs}
        session.last = (position, json.dumps(inputs), reply)
        return reply

    def step(self, sid: str, body: dict[str, Any]) -> httpx.Response:
        self.step_requests += 1
        fault = self.script.pop(0) if self.script else None
        if fault == "drop":
            raise httpx.ConnectError("connection refused (scripted)")
        if isinstance(fault, int):
            return _error(fault, {503: "session_store_unavailable", 429: "too_many_sessions"}.get(fault, "x"))
        reply, status = self.answer(sid, body["inputs"], body.get("position"))
        if fault == "lose":
            raise httpx.ReadError("connection reset while reading the reply (scripted)")
        if fault == "race" and status == 200:
            return _error(409, "position_conflict", position=self.sessions[sid].position)
        return httpx.Response(status, json=reply)

    def answer(self, sid: str, inputs: list[list[float]], position: int | None) -> tuple[dict[str, Any], int]:
        session = self.sessions.get(sid)
        if session is None:
            return {"error": "no such session", "code": "session_not_found"}, 404
        if session.expired:
            return {"error": "expired", "code": "session_expired"}, 410
        if session.model_changed:
            return {"error": "another graph", "code": "model_changed"}, 410
        if position is not None and position != session.position:
            last = session.last
            if last is not None and last[0] == position and last[1] == json.dumps(inputs):
                return last[2], 200
            return {"error": "conflict", "code": "position_conflict", "position": session.position}, 409
        return self.apply(sid, session, inputs, session.position), 200

    def bulk(self, body: dict[str, Any]) -> httpx.Response:
        fault = self.script.pop(0) if self.script else None
        results = []
        for entry in body["steps"]:
            reply, status = self.answer(entry["session_id"], entry["inputs"], entry.get("position"))
            results.append(reply if status == 200 else {**reply, "status": status, "session_id": entry["session_id"]})
        if fault == "lose":
            raise httpx.ReadError("bulk reply lost (scripted)")
        return httpx.Response(200, json={"results": results})


def _error(status: int, code: str, **details: Any) -> httpx.Response:
    return httpx.Response(status, json={"error": f"scripted {code}", "code": code, **details})
