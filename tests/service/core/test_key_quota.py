"""Tenants on the memory store with the default quotas: with several API keys no one key can
take every session slot (its own limit, a quarter of SEQSERVE_MAX_SESSIONS, comes first), and
a 429 names only the caller's own limit, never how many sessions the store or other keys hold."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from service.api.codecs import STEP_REPLY, error_body
from service.core.auth import KeyRing
from service.core.errors import TooManySessions
from service.core.lifecycle import per_key_quota
from service.core.metrics import Metrics
from service.core.services import build_services
from service.core.settings import Settings
from tests.support.counting import export_counting

MAX_SESSIONS = 8


async def test_one_key_cannot_take_every_slot_and_the_429_names_only_its_own_limit(tmp_path: Path) -> None:
    export_counting(tmp_path / "repo", "count", 1)
    svc = build_services(Settings(model_repository=tmp_path / "repo", max_sessions=MAX_SESSIONS), Metrics(), STEP_REPLY)
    svc.keys = KeyRing(frozenset(f"sha256:{k:064x}" for k in range(5)))
    try:
        for _ in range(2):
            await svc.sessions.create("count", owner="a")
        with pytest.raises(TooManySessions) as info:
            await svc.sessions.create("count", owner="a")
        body = orjson.loads(error_body(info.value))
        assert (body["limit"], body["max"]) == ("max_sessions_per_key", 2)
        for owner in "bcd":  # the others still get their share, until the store is full
            for _ in range(2):
                await svc.sessions.create("count", owner=owner)
        with pytest.raises(TooManySessions) as info:
            await svc.sessions.create("count", owner="e")
        body = orjson.loads(error_body(info.value))
        assert body["limit"] == "max_sessions" and "max" not in body
        assert str(MAX_SESSIONS) not in body["error"]  # nothing about the store's size or the others
    finally:
        svc.executor.shutdown(wait=True)


def test_the_default_per_key_quota() -> None:
    settings = Settings(max_sessions=100_000)
    assert per_key_quota(settings, 0) == 0 and per_key_quota(settings, 1) == 0  # no one else to starve
    assert per_key_quota(settings, 2) == 25_000
    assert per_key_quota(Settings(max_sessions_per_key=0), 5) == 0  # explicitly unlimited
    assert per_key_quota(Settings(max_sessions_per_key=7), 0) == 7
