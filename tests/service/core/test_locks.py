"""Per-session locks: FIFO hand-over, no lock left behind, cancellation while waiting."""

from __future__ import annotations

import asyncio

from service.core.locks import KeyedLocks


async def test_waiters_get_the_lock_in_arrival_order_and_nothing_is_left() -> None:
    locks = KeyedLocks()
    order: list[int] = []

    async def user(k: int) -> None:
        async with locks.hold("s"):
            order.append(k)
            await asyncio.sleep(0)

    await asyncio.gather(*(user(k) for k in range(20)))
    assert order == list(range(20)) and len(locks) == 0


async def test_a_cancelled_waiter_is_skipped_and_a_cancelled_heir_passes_the_lock_on() -> None:
    locks = KeyedLocks()
    await locks.acquire("s")
    first = asyncio.create_task(locks.acquire("s"))
    second = asyncio.create_task(locks.acquire("s"))
    third = asyncio.create_task(locks.acquire("s"))
    await asyncio.sleep(0)
    first.cancel()  # cancelled while waiting: skipped
    await asyncio.gather(first, return_exceptions=True)
    locks.release("s")  # handed to second
    second.cancel()  # ...which is cancelled before it runs: it hands the lock on to third
    await asyncio.gather(second, return_exceptions=True)
    await asyncio.wait_for(third, 1)
    assert not locks.try_acquire("s")
    locks.release("s")
    assert len(locks) == 0 and locks.try_acquire("s")


async def test_hold_all_takes_keys_in_order_and_releases_what_it_took_when_cancelled() -> None:
    locks = KeyedLocks()
    await locks.acquire("b")

    async def bulk() -> None:
        async with locks.hold_all(["c", "a", "b"]):
            raise AssertionError("never reached while b is held")

    task = asyncio.create_task(bulk())
    await asyncio.sleep(0.01)
    assert not locks.try_acquire("a")  # taken (sorted order), waiting for b
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert locks.try_acquire("a") and locks.try_acquire("c")
    for key in "abc":
        locks.release(key)
    assert len(locks) == 0
