"""Session.stream: readings over the pipelined WebSocket, resumed exactly after a drop.

Up to `window` messages are in flight, each carrying its `position`. Replies come in order.
When the connection drops (or a reply says 409 / 429 / 5xx), some of the messages in flight
may have been applied with their replies lost, and the service can replay only the last one.
So the client asks the service where the session is (GET, position only) and:

- messages wholly below that position were applied: their outputs are recomputed with one
  stateless predict from the last exported state over the readings since (the service
  guarantees stream == whole sequence, so these are the outputs the replies carried);
- the rest were not applied: they are sent again, with the same positions, on a new
  connection (a message applied meanwhile by the old connection is answered from the
  service's record or found by the next resynchronisation);
- a position that is not one of our message boundaries means another writer: PositionConflict.

The exported state ("checkpoint") is refreshed every `checkpoint_every` acknowledged steps,
so the readings kept for recomputation stay bounded.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from seqserve._protocol import RETRY_STATUSES, Attempts, as_steps
from seqserve.errors import PositionConflict, ProtocolError, SeqserveError, SessionLost, error_from_body

if TYPE_CHECKING:
    from seqserve.aio import AsyncSession

_END = object()
_DROPPED = (ConnectionClosed, OSError, TimeoutError, InvalidHandshake, asyncio.IncompleteReadError)


@dataclass(slots=True)
class _Message:
    start: int  # the session's (logical) position before this message
    steps: np.ndarray
    single: bool  # one reading given as a 1-D item: yield 1-D outputs

    @property
    def end(self) -> int:
        return self.start + len(self.steps)

    def text(self, base: int) -> str:
        return orjson.dumps(
            {"inputs": self.steps, "position": self.start - base}, option=orjson.OPT_SERIALIZE_NUMPY
        ).decode()

    def shaped(self, outputs: np.ndarray) -> np.ndarray:
        return outputs[0] if self.single else outputs


class _Resync(Exception):
    """A reply that means: find out where the session is, then carry on."""

    def __init__(self, error: SeqserveError) -> None:
        super().__init__(str(error))
        self.error = error


async def _items(readings: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    """The caller's readings. Sequences in memory are read directly; any other iterator (a
    generator reading a sensor or a file) is advanced in a worker thread, so waiting for its
    next value never stops replies from being read."""
    if isinstance(readings, AsyncIterable):
        async for item in readings:
            yield item
    elif isinstance(readings, list | tuple | np.ndarray) or _is_pandas(readings):
        for item in readings.to_numpy() if _is_pandas(readings) else readings:  # type: ignore[attr-defined]
            yield item
    else:
        iterator = iter(readings)
        while (item := await asyncio.to_thread(next, iterator, _END)) is not _END:
            yield item


def _is_pandas(value: Any) -> bool:
    module = type(value).__module__
    return module.startswith("pandas") and hasattr(value, "to_numpy")


def _ws_url(session: AsyncSession) -> str:
    base = session.client.base_url
    scheme, rest = base.split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/v1/sessions/{session.session_id}/stream"


async def _connect(session: AsyncSession) -> ClientConnection:
    client = session.client
    try:
        return await connect(
            _ws_url(session),
            additional_headers=client.headers,
            open_timeout=client.timeout,
            close_timeout=1.0,
            max_size=None,
        )
    except InvalidStatus as exc:  # refused at the handshake (401, or a proxy's 502/503)
        response = exc.response
        try:
            body = orjson.loads(response.body or b"")
        except orjson.JSONDecodeError:
            body = {"error": f"WebSocket handshake refused with HTTP {response.status_code}"}
        error = error_from_body(response.status_code, body)
        if response.status_code in RETRY_STATUSES:
            raise _Resync(error) from None
        raise error from None


async def _drop(ws: ClientConnection | None) -> None:
    if ws is not None:
        try:
            await asyncio.wait_for(ws.close(), 2.0)
        except Exception:  # already broken: nothing to close politely
            ws.transport.abort()


async def stream_session(
    session: AsyncSession, readings: Iterable[Any] | AsyncIterable[Any], window: int = 16
) -> AsyncIterator[np.ndarray]:
    if window < 1:
        raise ValueError("window must be at least 1")
    async with session._lock:
        if session._checkpoint is None:
            await session.export_state()
            if session._checkpoint is None:
                raise PositionConflict(
                    "the session is not where this client left it; cannot stream from here",
                    body={"position": None},
                )
        source = _items(readings).__aiter__()
        pending: deque[_Message] = deque()
        next_position = session.position
        exhausted = False
        attempts = Attempts(session.client.retry)
        ws: ClientConnection | None = None
        fetch: asyncio.Future[Any] | None = None  # the next reading, being produced
        receive: asyncio.Future[Any] | None = None  # the next reply, being read
        source_error: Exception | None = None
        try:
            while pending or not exhausted:
                try:
                    if ws is None:
                        ws = await _connect(session)
                        for message in pending:  # not applied as far as we know: same positions
                            await ws.send(message.text(session._base))
                    can_send = not exhausted and len(pending) < window
                    if can_send and fetch is None:
                        fetch = asyncio.ensure_future(anext(source, _END))
                    if can_send and fetch is not None and (fetch.done() or not pending):
                        try:
                            item = await fetch
                        except Exception as exc:  # the caller's readings failed: finish what was
                            source_error, item = exc, _END  # sent, then raise it as it was
                        fetch = None
                        if item is _END:
                            exhausted = True
                            continue
                        steps = as_steps(item, session.features)
                        message = _Message(next_position, steps, np.ndim(item) <= 1 and len(steps) == 1)
                        pending.append(message)
                        next_position = message.end
                        await ws.send(message.text(session._base))
                        continue
                    if not pending:
                        continue
                    # Wait for a reply, and for the next reading when one may be sent: replies
                    # are delivered while a slow source (a live sensor) produces its next value.
                    if receive is None:
                        receive = asyncio.ensure_future(ws.recv())
                    waiting = {receive, fetch} if can_send and fetch is not None else {receive}
                    done, _ = await asyncio.wait(
                        waiting, timeout=session.client.timeout, return_when=asyncio.FIRST_COMPLETED
                    )
                    if not done:
                        raise TimeoutError(f"no reply within {session.client.timeout}s")
                    if receive not in done:
                        continue  # a reading is ready; the reply is still awaited
                    raw, receive = receive.result(), None
                    reply = orjson.loads(raw)
                    if not isinstance(reply, dict):
                        raise ProtocolError(f"unexpected WebSocket reply: {str(raw)[:100]}")
                    if "outputs" not in reply:
                        status = reply.get("status")
                        error = error_from_body(status if isinstance(status, int) else 500, reply)
                        if isinstance(error, PositionConflict | SessionLost) or error.status in RETRY_STATUSES:
                            raise _Resync(error)
                        raise session._annotate(error, pending[0].steps)
                except (_Resync, *_DROPPED) as exc:
                    _forget(receive)
                    receive = None
                    await _drop(ws)
                    ws = None
                    why = exc.error if isinstance(exc, _Resync) else exc
                    if not isinstance(why, SessionLost):
                        await attempts.wait(why)
                    session.stats["reconnects"] += 1
                    for message, outputs in await _resync(session, pending):
                        yield message.shaped(outputs)
                    continue
                message = pending.popleft()
                outputs = session._accept(message.steps, reply)
                attempts.reset()
                yield message.shaped(outputs)
                await _refresh_checkpoint(session)
            if source_error is not None:
                raise source_error
        finally:
            _forget(receive)
            _forget(fetch)
            await _drop(ws)
            if pending:  # left early (the caller stopped, or an error): agree on the position
                await _settle(session, pending)


async def _settle(session: AsyncSession, pending: deque[_Message]) -> None:
    """Messages in flight when the stream ended were maybe applied: count those the service
    applied as acknowledged (their outputs were not asked for), so that the session's next
    step carries the service's position instead of meeting a conflict."""
    last = pending[-1].end
    server = -1
    try:
        for _ in range(20):  # the service may still be applying what it had already received
            info = await session.client.request("GET", session._path)
            seen, server = server, session._base + info["position"]
            if server in (seen, last):
                break
            await asyncio.sleep(0.05)
    except SeqserveError:
        return  # the next call finds out what happened
    while pending and pending[0].end <= server and pending[0].start == session.position:
        message = pending.popleft()
        session.position = message.end
        if session._checkpoint is not None:
            session._journal.append(message.steps)


def _forget(task: asyncio.Future[Any] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
    elif task is not None and not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" warning


async def _resync(session: AsyncSession, pending: deque[_Message]) -> list[tuple[_Message, np.ndarray]]:
    """Where the session is now decides which messages in flight were applied (see module)."""
    try:
        info = await session.client.request("GET", session._path)
    except SessionLost as error:
        if not session.recreate:
            steps = np.concatenate([m.steps for m in pending]) if pending else None
            raise session._annotate(error, steps) from None
        await session._recreate()  # the messages in flight go to the new session, unapplied
        return []
    server = session._base + info["position"]
    if server < session.position:
        raise ProtocolError(f"the service is at position {server}, behind the {session.position} it acknowledged")
    applied: list[_Message] = []
    while pending and pending[0].end <= server:
        applied.append(pending.popleft())
    if (applied[-1].end if applied else session.position) != server:
        conflict = PositionConflict(
            f"session is at position {server}, which none of this client's messages explains",
            body={"position": server - session._base},
        )
        raise session._annotate(conflict, None)
    if not applied:
        return []
    outputs = await session._recompute(np.concatenate([m.steps for m in applied]))
    session.stats["recomputed"] += len(outputs)
    results, offset = [], 0
    for message in applied:
        rows = outputs[offset : offset + len(message.steps)]
        offset += len(message.steps)
        session._accept(message.steps, {"position": message.end - session._base, "outputs": rows})
        results.append((message, rows))
    return results


async def _refresh_checkpoint(session: AsyncSession) -> None:
    """Export the state again once enough steps were acknowledged since the last export; the
    export may land ahead of what is acknowledged (messages in flight), so it is adopted
    when the acknowledged position reaches it."""
    upcoming = session._upcoming
    if upcoming is not None and session._adopt_checkpoint(*upcoming):
        session._upcoming = None
        return
    checkpoint = session._checkpoint
    if upcoming is None and checkpoint is not None and session.position - checkpoint[0] >= session.checkpoint_every:
        try:
            position, state = await session._read_state()
        except SeqserveError:
            return  # tried again after the next reply; a lost session shows up there
        if not session._adopt_checkpoint(position, state):
            session._upcoming = (position, state)
