"""A TCP proxy that loses traffic at random, between a client and a server (e.g. nginx).

Each chunk read from either side is, with a configured probability, not forwarded: both
connections are aborted instead. A dropped client->server chunk is a request that never
arrived; a dropped server->client chunk is a reply lost after the server acted on the
request, which is the case exactly-once clients must get right. The proxy runs its own event
loop in a daemon thread, so a blocking client can use it; `faults` counts what it did.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter

from tests.support.servers import free_port


class ChaosProxy:
    def __init__(self, upstream_port: int, *, seed: int, drop_request: float = 0.0, drop_reply: float = 0.0) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.random = random.Random(seed)
        self.drop_request = drop_request
        self.drop_reply = drop_reply
        self.enabled = True
        self.faults: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ChaosProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_writer.transport.abort()
            return
        writers = (client_writer, up_writer)

        def abort(kind: str) -> None:
            self.faults[kind] += 1
            for w in writers:
                w.transport.abort()

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, p: float, kind: str) -> None:
            try:
                while data := await src.read(65536):
                    if self.enabled and self.random.random() < p:
                        abort(kind)
                        return
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                if not dst.transport.is_closing():
                    dst.close()

        await asyncio.gather(
            pipe(client_reader, up_writer, self.drop_request, "request_dropped"),
            pipe(up_reader, client_writer, self.drop_reply, "reply_dropped"),
            return_exceptions=True,
        )
