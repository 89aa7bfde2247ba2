"""Per-session FIFO locks: within a process, a session's requests are applied one at a time in
arrival order (asyncio.Lock wakes waiters in arrival order); different sessions run in
parallel. Across processes the store's check-and-set on the position does the same job."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager


class KeyedLocks:
    """One FIFO lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def acquire(self, key: str) -> None:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:  # cancelled while waiting: no longer a user
            self._forget(key)
            raise

    def release(self, key: str) -> None:
        self._locks[key][0].release()
        self._forget(key)

    def _forget(self, key: str) -> None:
        lock, users = self._locks[key]
        if users == 1:
            del self._locks[key]
        else:
            self._locks[key] = (lock, users - 1)

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
        try:
            for key in sorted(set(keys)):
                await self.acquire(key)
                held.append(key)
            yield
        finally:
            for key in held:
                self.release(key)

    def __len__(self) -> int:
        return len(self._locks)
