"""Large replies written in bounded chunks as the client reads them (HTTP/1.1 chunked
transfer encoding), encoded straight from the result's numpy arrays.

A reply encoded whole is one bytes object of ~12 bytes per output value (more with forecast
times: ~23 bytes per lead), and a client that never reads keeps all of it in the server's
memory (in the transport's write buffer, after a copy or two on the way there). Streamed, a
reply is a generator over the same value the whole encoder would get: numpy arrays are
encoded a few thousand values at a time (slices of their first axis), and the rows that
would otherwise be built as large Python lists (forecast times, anomaly rows) are built one
slice at a time (`Rows`). The generator runs on the event loop in bounded slices (one
~64 KiB chunk at a time, giving the loop back in between) and only as fast as uvicorn's
`send` returns: send waits while the transport's buffer is over its high-water mark (64 KiB),
so a client that does not read stops the encoding. What one such connection holds is the
result's arrays (4 bytes per value), one chunk and the transport's buffer, and only until
SEQSERVE_SEND_TIMEOUT_SECONDS pass without the client reading (service/api/http_coalescing.py).

The bytes are those of orjson.dumps of the whole value, so a streamed reply is byte for byte
the reply encoded whole (orjson writes each float the same wherever it stands; tests compare
them). Small replies (the hot step path) never come here: they keep the single-body answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import numpy as np
import orjson
from starlette.responses import StreamingResponse

NUMPY = orjson.OPT_SERIALIZE_NUMPY
CHUNK_BYTES = 64 * 1024  # bytes handed to one send (about the transport's high-water mark)
SLICE_VALUES = 4096  # values encoded by one orjson call (~50 KB of JSON)


class Rows:
    """A JSON array of `count` items built `make(lo, hi)` (a list of items lo..hi-1) a slice at
    a time, so the whole list never exists; `width`: values per item, which sizes a slice."""

    __slots__ = ("count", "make", "width")

    def __init__(self, count: int, make: Callable[[int, int], list[Any]], width: int = 1) -> None:
        self.count = count
        self.make = make
        self.width = max(1, width)

    def whole(self) -> list[Any]:
        return self.make(0, self.count)


class AsText:
    """A JSON string holding the JSON of `value` (V2 parameters are scalars, so its forecast
    times travel as one string), written a slice at a time like any other value: escaping is
    per character, so the escaped slices are the escaped whole."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def pieces(value: Any) -> Iterator[bytes]:
    """The JSON of `value` (as orjson.dumps(value, OPT_SERIALIZE_NUMPY) writes it) in pieces
    of bounded size: objects and arrays holding arrays or Rows are walked, an ndarray is
    written a slice of its first axis at a time (any layout: a slice is made contiguous),
    anything else in one call."""
    if isinstance(value, np.ndarray):
        yield from _array(value)
    elif isinstance(value, Rows):
        yield from _rows(value)
    elif isinstance(value, AsText):
        yield b'"'
        for piece in pieces(value.value):
            yield orjson.dumps(piece.decode())[1:-1]
        yield b'"'
    elif isinstance(value, dict):
        yield b"{"
        first = True
        for key, item in value.items():
            yield (b"" if first else b",") + orjson.dumps(key) + b":"
            first = False
            yield from pieces(item)
        yield b"}"
    elif isinstance(value, list) and value and isinstance(value[0], (np.ndarray, Rows, dict)):
        yield b"["
        for i, item in enumerate(value):
            if i:
                yield b","
            yield from pieces(item)
        yield b"]"
    else:
        yield orjson.dumps(value, option=NUMPY)


def _array(array: np.ndarray) -> Iterator[bytes]:
    if array.ndim == 0 or array.size <= SLICE_VALUES or array.shape[0] <= 1:
        yield orjson.dumps(np.ascontiguousarray(array), option=NUMPY)
        return
    per = max(1, SLICE_VALUES // max(1, array[0].size))
    yield b"["
    for lo in range(0, array.shape[0], per):
        encoded = orjson.dumps(np.ascontiguousarray(array[lo : lo + per]), option=NUMPY)
        yield (b"," if lo else b"") + encoded[1:-1]
    yield b"]"


def _rows(rows: Rows) -> Iterator[bytes]:
    per = max(1, SLICE_VALUES // rows.width)
    yield b"["
    for lo in range(0, rows.count, per):
        encoded = orjson.dumps(rows.make(lo, min(lo + per, rows.count)), option=NUMPY)
        yield (b"," if lo else b"") + encoded[1:-1]
    yield b"]"


def whole(value: Any) -> Any:
    """`value` with every Rows built whole (what the one-call encoder takes)."""
    if isinstance(value, Rows):
        return value.whole()
    if isinstance(value, AsText):
        return orjson.dumps(whole(value.value), option=NUMPY).decode()
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value)
    if isinstance(value, dict):
        return {k: whole(v) for k, v in value.items()}
    if isinstance(value, list) and value and isinstance(value[0], (np.ndarray, Rows, dict)):
        return [whole(v) for v in value]
    return value


def chunked(parts: Iterable[bytes], size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """`parts` joined into chunks of about `size` bytes (the last one shorter)."""
    buffer: list[bytes] = []
    held = 0
    for part in parts:
        buffer.append(part)
        held += len(part)
        if held >= size:
            yield b"".join(buffer)
            buffer, held = [], 0
    if buffer:
        yield b"".join(buffer)


class Streamed:
    """A reply body produced chunk by chunk (see the module's docstring). `length`: the body's
    size when known beforehand (it is then sent with Content-Length instead of chunked);
    `after`: called once the body is sent or abandoned."""

    def __init__(
        self,
        chunks: Iterator[bytes],
        media_type: str = "application/json",
        headers: dict[str, str] | None = None,
        length: int | None = None,
        after: Callable[[], None] | None = None,
    ) -> None:
        self.chunks = chunks
        self.media_type = media_type
        self.headers = dict(headers or {})
        self.length = length
        self.after = after

    def join(self) -> bytes:
        """The whole body (tests; never a server path)."""
        try:
            return b"".join(self.chunks)
        finally:
            self._done()

    def _done(self) -> None:
        after, self.after = self.after, None
        if after is not None:
            after()

    async def _produce(self) -> AsyncIterator[bytes]:
        try:
            for chunk in self.chunks:
                yield chunk
                await asyncio.sleep(0)  # a client reading as fast as we write must not hold the loop
        finally:
            self.chunks = iter(())  # the generator and the arrays it holds go now
            self._done()

    def response(self, extra_headers: dict[str, str] | None = None) -> StreamingResponse:
        """As a Starlette response: one send per chunk, each waiting while the client is behind,
        and the generator stopped when the client goes away."""
        headers = {**self.headers, **(extra_headers or {})}
        if self.length is not None:
            headers["content-length"] = str(self.length)
        return StreamingResponse(self._produce(), media_type=self.media_type, headers=headers)


def json_body(value: Any, stream: bool, after: Callable[[], None] | None = None) -> bytes | Streamed:
    """`value` as one JSON body, or streamed when `stream` (the same bytes either way)."""
    if stream:
        return Streamed(chunked(pieces(value)), after=after)
    body = orjson.dumps(whole(value), option=NUMPY)
    if after is not None:
        after()
    return body
