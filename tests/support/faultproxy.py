"""A TCP proxy that injects faults between the service and redis-server.

    with FaultProxy(redis.port) as proxy:
        url = proxy.url                 # give this to the service instead of redis.url
        proxy.drop_reply_rate = 0.03    # the command runs, its reply never arrives
        proxy.reset_rate = 0.01         # the connection dies before the command is sent on
        proxy.delay_rate, proxy.delay_s = 0.05, 0.05   # replies held back a while
        proxy.pause(0.3)                # nothing moves for a while (both directions)

"Drop the reply" is the fault that makes a client unsure whether its write happened: the
proxy forwards the command, waits until redis-server answers (so the command surely ran),
then aborts the client's connection instead of forwarding the answer. Every fault is
counted in `faults`, so a test can show it really exercised them.

The proxy runs its own event loop in a daemon thread; settings are plain attributes read on
every chunk, so a test may change them while traffic flows.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections import Counter

CHUNK = 65536


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1", seed: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.drop_reply_rate = 0.0
        self.reset_rate = 0.0
        self.delay_rate = 0.0
        self.delay_s = 0.0
        self.faults: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._resume_at = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> FaultProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._connections):
                writer.transport.abort()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def calm(self) -> None:
        """No more faults (what is in flight finishes normally)."""
        self.drop_reply_rate = self.reset_rate = self.delay_rate = 0.0
        self._resume_at = 0.0

    def pause(self, seconds: float) -> None:
        """Hold every byte in both directions for `seconds` (a stalled network or server)."""
        self._resume_at = time.monotonic() + seconds
        self.faults["pause"] += 1

    def reset_all(self) -> None:
        """Abort every open connection now (a restart of the network path)."""
        self._loop.call_soon_threadsafe(self._abort_all)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inside the proxy's loop

    def _abort_all(self) -> None:
        for writer in list(self._connections):
            writer.transport.abort()
        self.faults["reset_all"] += 1

    def _chance(self, rate: float) -> bool:
        return rate > 0 and self._random.random() < rate

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def _hold(self) -> None:
        while (wait := self._resume_at - time.monotonic()) > 0:
            await asyncio.sleep(min(wait, 0.05))

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._connections.update((client_writer, server_writer))
        pending_drop = asyncio.Event()

        def abort() -> None:
            client_writer.transport.abort()
            server_writer.transport.abort()

        async def commands() -> None:
            while data := await client_reader.read(CHUNK):
                await self._hold()
                if self._chance(self.reset_rate):
                    self.faults["reset"] += 1
                    abort()  # the command never reaches the server
                    return
                if self._chance(self.drop_reply_rate):
                    pending_drop.set()
                server_writer.write(data)
                await server_writer.drain()

        async def replies() -> None:
            while data := await server_reader.read(CHUNK):
                if pending_drop.is_set():
                    self.faults["drop_reply"] += 1
                    abort()  # the server answered, so the command ran; the client never hears
                    return
                await self._hold()
                if self._chance(self.delay_rate):
                    self.faults["delay"] += 1
                    await asyncio.sleep(self.delay_s)
                client_writer.write(data)
                await client_writer.drain()

        tasks = [asyncio.create_task(commands()), asyncio.create_task(replies())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
                    await task
            abort()
            self._connections.difference_update((client_writer, server_writer))
