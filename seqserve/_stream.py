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
from typing import Any, Protocol

import numpy as np
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from seqserve import _requests as requests
from seqserve._progress import Progress, State
from seqserve._protocol import RETRY_STATUSES, Attempts, RetryPolicy, as_steps
from seqserve._requests import Request
from seqserve.errors import PositionConflict, ProtocolError, SeqserveError, SessionLost, error_from_body

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

    def text(self, progress: Progress) -> str:
        return requests.stream_message(self.steps, progress.on_server(self.start))

    def shaped(self, outputs: np.ndarray) -> np.ndarray:
        return outputs[0] if self.single else outputs


class Link(Protocol):
    """What the stream needs of a session (seqserve.aio gives it one per stream): its
    progress, its lock, its settings, and the calls below."""

    progress: Progress
    lock: asyncio.Lock
    features: int | None
    recreate: bool
    stats: dict[str, int]
    retry: RetryPolicy
    timeout: float
    base_url: str
    headers: dict[str, str]

    async def send(self, request: Request) -> Any:
        """A request with the client's retry policy: the decoded answer or the typed error."""

    async def export_state(self) -> None:
        """Export the state and make it the checkpoint."""

    async def read_state(self) -> tuple[int, State]:
        """(logical position, state) as the server holds them."""

    async def recreate_session(self) -> None:
        """A new server-side session from the checkpoint (recreate=True)."""

    async def recompute(self, steps: np.ndarray) -> np.ndarray:
        """Outputs of `steps` (applied, replies lost) by a stateless predict."""


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


async def _connect(link: Link) -> ClientConnection:
    try:
        return await connect(
            requests.stream_url(link.base_url, link.progress.session_id),
            additional_headers=link.headers,
            open_timeout=link.timeout,
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
    link: Link, readings: Iterable[Any] | AsyncIterable[Any], window: int = 16
) -> AsyncIterator[np.ndarray]:
    if window < 1:
        raise ValueError("window must be at least 1")
    async with link.lock:
        if link.progress.checkpoint is None:
            await link.export_state()
            if link.progress.checkpoint is None:
                raise PositionConflict(
                    "the session is not where this client left it; cannot stream from here",
                    body={"position": None},
                )
        source = _items(readings).__aiter__()
        pending: deque[_Message] = deque()
        next_position = link.progress.position
        exhausted = False
        attempts = Attempts(link.retry)
        ws: ClientConnection | None = None
        fetch: asyncio.Future[Any] | None = None  # the next reading, being produced
        receive: asyncio.Future[Any] | None = None  # the next reply, being read
        source_error: Exception | None = None
        try:
            while pending or not exhausted:
                try:
                    if ws is None:
                        ws = await _connect(link)
                        for message in pending:  # not applied as far as we know: same positions
                            await ws.send(message.text(link.progress))
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
                        steps = as_steps(item, link.features)
                        message = _Message(next_position, steps, np.ndim(item) <= 1 and len(steps) == 1)
                        pending.append(message)
                        next_position = message.end
                        await ws.send(message.text(link.progress))
                        continue
                    if not pending:
                        continue
                    # Wait for a reply, and for the next reading when one may be sent: replies
                    # are delivered while a slow source (a live sensor) produces its next value.
                    if receive is None:
                        receive = asyncio.ensure_future(ws.recv())
                    waiting = {receive, fetch} if can_send and fetch is not None else {receive}
                    done, _ = await asyncio.wait(waiting, timeout=link.timeout, return_when=asyncio.FIRST_COMPLETED)
                    if not done:
                        raise TimeoutError(f"no reply within {link.timeout}s")
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
                        raise link.progress.annotate(error, pending[0].steps)
                except (_Resync, *_DROPPED) as exc:
                    _forget(receive)
                    receive = None
                    await _drop(ws)
                    ws = None
                    why = exc.error if isinstance(exc, _Resync) else exc
                    if not isinstance(why, SessionLost):
                        await attempts.wait(why)
                    link.stats["reconnects"] += 1
                    for message, outputs in await _resync(link, pending):
                        yield message.shaped(outputs)
                    continue
                message = pending.popleft()
                outputs = link.progress.accept(message.steps, reply)
                attempts.reset()
                yield message.shaped(outputs)
                await _refresh_checkpoint(link)
            if source_error is not None:
                raise source_error
        finally:
            _forget(receive)
            _forget(fetch)
            await _drop(ws)
            if pending:  # left early (the caller stopped, or an error): agree on the position
                await _settle(link, pending)


async def _settle(link: Link, pending: deque[_Message]) -> None:
    """Messages in flight when the stream ended were maybe applied: count those the service
    applied as acknowledged (their outputs were not asked for), so that the session's next
    step carries the service's position instead of meeting a conflict."""
    progress = link.progress
    last = pending[-1].end
    server = -1
    try:
        for _ in range(20):  # the service may still be applying what it had already received
            info = await link.send(requests.info(progress.session_id))
            seen, server = server, progress.base + info["position"]
            if server in (seen, last):
                break
            await asyncio.sleep(0.05)
    except SeqserveError:
        return  # the next call finds out what happened
    while pending and pending[0].end <= server and pending[0].start == progress.position:
        progress.acknowledge(pending.popleft().steps)


def _forget(task: asyncio.Future[Any] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
    elif task is not None and not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" warning


async def _resync(link: Link, pending: deque[_Message]) -> list[tuple[_Message, np.ndarray]]:
    """Where the session is now decides which messages in flight were applied (see module)."""
    progress = link.progress
    try:
        info = await link.send(requests.info(progress.session_id))
    except SessionLost as error:
        if not link.recreate:
            steps = np.concatenate([m.steps for m in pending]) if pending else None
            raise progress.annotate(error, steps) from None
        await link.recreate_session()  # the messages in flight go to the new session, unapplied
        return []
    server = progress.base + info["position"]
    if server < progress.position:
        raise ProtocolError(f"the service is at position {server}, behind the {progress.position} it acknowledged")
    applied: list[_Message] = []
    while pending and pending[0].end <= server:
        applied.append(pending.popleft())
    if (applied[-1].end if applied else progress.position) != server:
        conflict = PositionConflict(
            f"session is at position {server}, which none of this client's messages explains",
            body={"position": progress.on_server(server)},
        )
        raise progress.annotate(conflict, None)
    if not applied:
        return []
    outputs = await link.recompute(np.concatenate([m.steps for m in applied]))
    link.stats["recomputed"] += len(outputs)
    results, offset = [], 0
    for message in applied:
        rows = outputs[offset : offset + len(message.steps)]
        offset += len(message.steps)
        progress.accept(message.steps, {"position": progress.on_server(message.end), "outputs": rows})
        results.append((message, rows))
    return results


async def _refresh_checkpoint(link: Link) -> None:
    """Export the state again once enough steps were acknowledged since the last export; the
    export may land ahead of what is acknowledged (messages in flight), so it is adopted
    when the acknowledged position reaches it."""
    progress = link.progress
    upcoming = progress.upcoming
    if upcoming is not None and progress.adopt(*upcoming):
        progress.upcoming = None
        return
    if upcoming is None and progress.due():
        try:
            position, state = await link.read_state()
        except SeqserveError:
            return  # tried again after the next reply; a lost session shows up there
        if not progress.adopt(position, state):
            progress.upcoming = (position, state)
