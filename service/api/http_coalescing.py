"""uvicorn's httptools protocol, writing each small response with one send instead of two, and
bounded: header size, header-read time and open connections (BoundedHttpToolsProtocol).

uvicorn writes a response's status line and headers as soon as the app sends
`http.response.start`, and the body on `http.response.body`: two send() system calls and,
with TCP_NODELAY, two packets per response. For streaming steps (a ~100-byte answer per
reading) that was the largest single cost in a profile of the server under load. This
protocol gives the request cycle a transport that holds a complete 2xx header block back and
sends it together with the next write (the body). If no write follows in the same event-loop
turn (HEAD, or an app that pauses between start and body), a callback sends the headers
alone on the next turn, so nothing is ever held. Upgrades (101), 100-continue and error
statuses pass straight through.

After a WebSocket upgrade (the 101 passes through) every write of a loop turn is held and sent
with one send() at the end of the turn: a batch of pipelined messages is answered by one
frame per reply, so without this a batch of 16 replies was 16 system calls.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from models.error_codes import status_of
from service.core.errors import refused


class _CoalescingTransport:
    __slots__ = ("_frames", "_pending", "_scheduled", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._pending: bytes | None = None
        self._scheduled = False
        self._frames: list[bytes] | None = None  # set after an upgrade: this turn's WebSocket frames

    def write(self, data: Any) -> None:
        frames = self._frames
        if frames is not None:
            frames.append(bytes(data))
            if not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
            return
        pending = self._pending
        if pending is not None:
            self._pending = None
            self._transport.write(pending + bytes(data))
            return
        if isinstance(data, bytes) and data.startswith(b"HTTP/1.1 101"):
            self._transport.write(data)
            self._frames = []  # a WebSocket from now on: frames are sent per loop turn
            return
        if isinstance(data, bytes) and data.startswith(b"HTTP/1.1 2") and data.endswith(b"\r\n\r\n"):
            self._pending = data
            if not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
            return
        self._transport.write(data)

    def _flush(self) -> None:
        self._scheduled = False
        if self._pending is not None:
            pending, self._pending = self._pending, None
            if not self._transport.is_closing():
                self._transport.write(pending)
        frames = self._frames
        if frames:
            self._frames = []
            if not self._transport.is_closing():
                self._transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CoalescingTransport(transport))  # type: ignore[arg-type]


class Limits:
    """Per-connection limits, set once per process from Settings (`configure`) before uvicorn
    builds protocols; class attributes because uvicorn constructs the protocol itself."""

    max_header_bytes = 64 * 1024
    header_timeout = 10.0
    max_connections = 2048
    body_timeout = 30.0
    max_per_client = 512  # 0: no per-client limit
    send_timeout = 60.0  # 0: none


# At shutdown a client that is not reading its reply gets this long (not send_timeout) before
# its connection is closed, so that it does not hold the exit for the whole grace period.
SHUTDOWN_SEND_TIMEOUT = 2.0

# Connections beyond max_connections that are still accepted, for health checks only: a client
# that holds every connection must not make the probes fail (and the pod be restarted).
HEALTH_RESERVE = 16
HEALTH_PATHS = (b"/v2/health/", b"/v1/health/")


def configure(
    max_header_bytes: int,
    header_timeout: float,
    max_connections: int,
    body_timeout: float = 30.0,
    max_per_client: int = 512,
    send_timeout: float = 60.0,
) -> None:
    Limits.max_header_bytes = max_header_bytes
    Limits.header_timeout = header_timeout
    Limits.max_connections = max_connections
    Limits.body_timeout = body_timeout
    Limits.max_per_client = max_per_client
    Limits.send_timeout = send_timeout


def _refusal(phrase: bytes, code: str, message: str) -> bytes:
    """A whole HTTP response refusing a request before it is parsed; its status is the code's
    (models/error_codes.py)."""
    status = status_of(code)
    body = orjson.dumps({"error": message, "code": code})
    return b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s" % (
        status,
        phrase,
        len(body),
        body,
    )


class BoundedHttpToolsProtocol(CoalescingHttpToolsProtocol):
    """Limits uvicorn's httptools protocol does not have.

    - Header size: httptools buffers a header of any size (and concatenates it piecewise, so
      a 64 MiB header costs seconds of CPU); bytes are counted before they reach the parser
      and a request whose header block exceeds `max_header_bytes` is answered 431 and closed.
      Counting is per read, so the limit holds to within one socket read (at most 256 KiB).
    - Header-read timeout: a connection that opens, or starts a request, and does not
      finish its headers within `header_timeout` seconds is closed (408 if it sent
      anything). Idle keep-alive connections are closed by uvicorn's `timeout_keep_alive`.
    - Body-read timeout: a request's body must arrive within `body_timeout` seconds after its
      headers, or the connection is closed (a slow-body client cannot hold it forever).
    - Send timeout: a client that reads nothing of its reply, so that the write buffer stays
      over its high-water mark (uvicorn's send waits; a streamed reply stops being encoded) for
      `send_timeout` seconds, has its connection aborted: what the reply holds (its arrays,
      the buffer) is let go instead of kept for as long as the client stays connected.
    - Connection limits: one client address holds at most `max_per_client` open connections
      (HTTP and WebSocket); beyond `max_connections` in all a new one is answered 503 and
      closed, before it costs a request task, except for a small reserve that serves only
      the health checks (so one client holding every connection does not fail the probes).
    """

    clients: ClassVar[Counter[str]] = Counter()  # open connections per client address (this process)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_headers = True
        self._header_bytes = 0
        self._tail = b""
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._send_timeout_s = Limits.send_timeout
        self._refused = False
        self._client: str | None = None  # counted in `clients` while open
        self._health_only = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        held = self.clients[client]
        if Limits.max_per_client and held >= Limits.max_per_client:
            refused("max_connections_per_client")
            self.logger.warning(
                "connection refused: the client holds %d connections (max_connections_per_client)", held
            )
            message = f"this client holds {held} open connections (at most {Limits.max_per_client}); close some first"
            self._refuse(_refusal(b"Service Unavailable", "too_many_connections", message))
            return
        if len(self.connections) > Limits.max_connections:
            if len(self.connections) > Limits.max_connections + HEALTH_RESERVE:
                refused("max_connections")
                self.logger.warning(
                    "connection refused: %d connections open (max_connections)", len(self.connections) - 1
                )
                self._refuse(_refusal(b"Service Unavailable", "too_many_connections", "too many open connections"))
                return
            self._health_only = True  # the reserve: health checks only (decided on the request line)
        self._client = client
        self.clients[client] = held + 1
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        self._cancel_body_timer()
        self._cancel_send_timer()
        if self._client is not None:
            left = self.clients[self._client] - 1
            if left > 0:
                self.clients[self._client] = left
            else:
                del self.clients[self._client]
            self._client = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._reading_headers and not self._headers_fit(data):
            self.logger.warning("request refused: header block over %d bytes", Limits.max_header_bytes)
            message = f"request headers exceed {Limits.max_header_bytes} bytes"
            self._refuse(_refusal(b"Request Header Fields Too Large", "headers_too_large", message))
            return
        super().data_received(data)
        if self._reading_headers and self._header_bytes and self._header_timer is None:
            self._arm_header_timer()  # a request has started and its headers are not complete

    def _headers_fit(self, data: bytes) -> bool:
        budget = Limits.max_header_bytes - self._header_bytes
        if len(data) <= budget:
            self._header_bytes += len(data)
            self._tail = data[-3:]
            return True
        # Over budget only if the header block does not end within it (the same read may
        # carry the end of the headers and then a large body).
        end = (self._tail + data).find(b"\r\n\r\n")
        return end != -1 and end + 4 - len(self._tail) <= budget

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._header_bytes = 0
        self._tail = b""
        self._cancel_header_timer()
        if self._health_only and not bytes(self.url).startswith(HEALTH_PATHS):
            refused("max_connections")
            self._refuse(_refusal(b"Service Unavailable", "too_many_connections", "too many open connections"))
            return
        super().on_headers_complete()
        if not (self.parser.should_upgrade() and self._should_upgrade()):  # a WebSocket has no body
            self._body_timer = self.loop.call_later(Limits.body_timeout, self._body_timeout)

    def on_message_complete(self) -> None:
        self._cancel_body_timer()
        super().on_message_complete()
        self._reading_headers = True  # whatever arrives next is the next request's headers

    def shutdown(self) -> None:
        """Server shutdown: a connection still waiting for its request's body is closed at
        once (uvicorn would wait for that request through the whole grace period, then cancel
        it with a traceback); everything else as uvicorn does it (idle ones closed, requests
        in flight answered)."""
        if self._body_timer is not None and not self.transport.is_closing():
            self._cancel_body_timer()
            self._refused = True
            self.transport.close()
            return
        # A reply being written goes on, but a client not reading it gets a moment, not the grace.
        self._send_timeout_s = SHUTDOWN_SEND_TIMEOUT
        if self._send_timer is not None:
            self._cancel_send_timer()
            self._send_timer = self.loop.call_later(SHUTDOWN_SEND_TIMEOUT, self._send_timeout)
        super().shutdown()

    def pause_writing(self) -> None:
        """The transport's buffer is over its high-water mark: the client has that long to read."""
        super().pause_writing()
        if self._send_timeout_s and self._send_timer is None:
            self._send_timer = self.loop.call_later(self._send_timeout_s, self._send_timeout)

    def resume_writing(self) -> None:
        self._cancel_send_timer()
        super().resume_writing()

    def _cancel_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_timeout(self) -> None:
        """The client read too little of its reply for `send_timeout`: the connection is aborted
        (close() would wait for the buffer to drain, which this client never does); the
        application sees the client go away. Counted, logged once."""
        self._send_timer = None
        if self.transport.is_closing():
            return
        refused("send_timeout_seconds")
        self.logger.warning("connection closed: the client read nothing of its reply for %g s", self._send_timeout_s)
        self._refused = True
        self.transport.abort()

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_timeout(self) -> None:
        """The body did not arrive in time: the connection is closed (the application sees the
        client go away); counted, logged once."""
        self._body_timer = None
        if self.transport.is_closing() or self._reading_headers:
            return
        refused("body_timeout_seconds")
        self.logger.warning("connection closed: request body not received within %g s", Limits.body_timeout)
        self._refused = True
        self.transport.close()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(Limits.header_timeout, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._reading_headers:
            return
        if self._header_bytes:
            message = f"request headers not received within {Limits.header_timeout:g} s"
            self._refuse(_refusal(b"Request Timeout", "header_timeout", message))
        else:
            self._refused = True
            self.transport.close()

    def _refuse(self, response: bytes) -> None:
        self._refused = True
        self._cancel_header_timer()
        self._cancel_body_timer()
        self.transport.write(response)
        self.transport.close()
