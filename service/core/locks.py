"""Per-session FIFO locks: within a process, a session's requests are applied one at a time in
arrival order; different sessions run in parallel. Across processes the store's check-and-set
on the position does the same job.

A lock that nobody holds does not exist: taking it is one dict insert (a bulk request takes
hundreds at once: when none of them is held, all in one C call), and only a caller that finds
it held waits, on a future of its own, in a queue (made then) the holder hands the lock down
on release."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager


class KeyedLocks:
    """One FIFO lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        # held keys -> their waiters (None until one waits)
        self._queues: dict[str, deque[asyncio.Future[None]] | None] = {}

    def try_acquire(self, key: str) -> bool:
        """Take the lock if nobody holds it (never waits)."""
        if key in self._queues:
            return False
        self._queues[key] = None
        return True

    async def acquire(self, key: str) -> None:
        queues = self._queues
        if key not in queues:
            queues[key] = None
            return
        queue = queues[key]
        if queue is None:
            queue = queues[key] = deque()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release(key)  # handed the lock just as this caller was cancelled: pass it on
            else:
                waiter.cancel()  # skipped by release
            raise

    def release(self, key: str) -> None:
        queue = self._queues[key]
        while queue:  # None or empty: nobody waits
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the key stays held, by the next in line
                return
        del self._queues[key]

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        await self.acquire(key)
        try:
            yield
        finally:
            self.release(key)

    @asynccontextmanager
    async def hold_all(self, keys: Iterable[str]) -> AsyncIterator[None]:
        """Several keys, taken in sorted order so that two callers holding overlapping sets
        cannot deadlock; only what was acquired is released, even if cancelled midway."""
        held: list[str] = []
        queues = self._queues
        try:
            wanted = dict.fromkeys(keys)
            if queues.keys().isdisjoint(wanted):  # none held: all taken at once, nothing awaited
                queues.update(wanted)
                held = list(wanted)
            else:
                for key in sorted(wanted):
                    if key in queues:
                        await self.acquire(key)
                    else:  # try_acquire, inline: a bulk request takes hundreds
                        queues[key] = None
                    held.append(key)
            yield
        finally:
            for key in held:
                if queues[key]:
                    self.release(key)
                else:  # nobody waits: release() would only drop it
                    del queues[key]

    def __len__(self) -> int:
        return len(self._queues)
