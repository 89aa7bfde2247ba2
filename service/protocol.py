"""uvicorn's httptools protocol, writing each small response with one send instead of two.

uvicorn writes a response's status line and headers as soon as the app sends
`http.response.start`, and the body on `http.response.body`: two send() system calls and,
with TCP_NODELAY, two packets per response. For streaming steps (a ~100-byte answer per
reading) that was the largest single cost in a profile of the server under load. This
protocol gives the request cycle a transport that holds a complete 2xx header block back and
sends it together with the next write (the body). If no write follows in the same event-loop
turn (HEAD, or an app that pauses between start and body), a callback sends the headers
alone on the next turn, so nothing is ever held. Upgrades (101), 100-continue and error
statuses pass straight through.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _CoalescingTransport:
    __slots__ = ("_pending", "_scheduled", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._pending: bytes | None = None
        self._scheduled = False

    def write(self, data: Any) -> None:
        pending = self._pending
        if pending is not None:
            self._pending = None
            self._transport.write(pending + bytes(data))
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

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CoalescingTransport(transport))  # type: ignore[arg-type]
